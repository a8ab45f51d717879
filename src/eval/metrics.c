/* Means, standard errors and calibration (include/camelid/eval_metrics.h). */
#include "camelid/eval_metrics.h"

#include <math.h>

double cm_metric_mean(const double *x, size_t n) {
    if (n == 0) return NAN;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s / (double)n;
}

double cm_metric_stderr(const double *x, size_t n) {
    if (n < 2) return NAN;
    double m = cm_metric_mean(x, n), ss = 0;
    for (size_t i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m);
    return sqrt(ss / (double)(n - 1)) / sqrt((double)n);
}

void cm_metric_softmax(const double *ll, size_t n, double *p) {
    if (n == 0) return;
    double mx = ll[0], z = 0;
    for (size_t i = 1; i < n; i++)
        if (ll[i] > mx) mx = ll[i];
    for (size_t i = 0; i < n; i++) z += (p[i] = exp(ll[i] - mx));
    for (size_t i = 0; i < n; i++) p[i] /= z;
}

void cm_calibration_add(cm_calibration *c, const double *p, size_t n, size_t pred, size_t gold) {
    double conf = p[pred];
    int bin = (int)(conf * 10.0);
    if (bin > 9) bin = 9;
    if (bin < 0) bin = 0;
    c->bin_conf[bin] += conf;
    c->bin_acc[bin] += pred == gold ? 1.0 : 0.0;
    c->bin_n[bin]++;
    double b = 0;
    for (size_t i = 0; i < n; i++) {
        double y = i == gold ? 1.0 : 0.0;
        b += (p[i] - y) * (p[i] - y);
    }
    c->brier_sum += b;
    c->n++;
}

double cm_calibration_ece(const cm_calibration *c) {
    if (c->n == 0) return NAN;
    double e = 0;
    for (int b = 0; b < 10; b++)
        if (c->bin_n[b]) e += fabs(c->bin_acc[b] - c->bin_conf[b]) / (double)c->n;
    return e;
}

double cm_calibration_brier(const cm_calibration *c) {
    return c->n ? c->brier_sum / (double)c->n : NAN;
}
