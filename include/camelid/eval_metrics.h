/* Metrics shared by the evaluation tasks: mean and its standard error (lm-eval: sample standard deviation
 * over sqrt(n)), and calibration of multiple-choice answers (the choice probabilities normalized over the
 * choices): expected calibration error over 10 equal-width confidence bins and the (multi-class) Brier score.
 */
#ifndef CAMELID_EVAL_METRICS_H
#define CAMELID_EVAL_METRICS_H

#include <stdbool.h>
#include <stddef.h>

/* NaN for n == 0. */
double cm_metric_mean(const double *x, size_t n);
/* sqrt(sum (x - mean)^2 / (n - 1)) / sqrt(n); NaN for n < 2. */
double cm_metric_stderr(const double *x, size_t n);

/* Softmax of `n` log-likelihoods into `p` (computed in double, stable). */
void cm_metric_softmax(const double *ll, size_t n, double *p);

/* Accumulates calibration over items. */
typedef struct cm_calibration {
    size_t n;
    double bin_conf[10], bin_acc[10];
    size_t bin_n[10];
    double brier_sum;
} cm_calibration;

/* Add one item: normalized probabilities `p` of `n` choices, the predicted index and the gold index.
 * Confidence = p[pred]; correct = pred == gold; Brier term = sum_i (p_i - [i == gold])^2. */
void cm_calibration_add(cm_calibration *c, const double *p, size_t n, size_t pred, size_t gold);
/* ECE = sum over bins of (n_b / N) |acc_b - conf_b|, bins [0, .1), [.1, .2), ..., [.9, 1]. NaN if empty. */
double cm_calibration_ece(const cm_calibration *c);
/* Mean Brier score (0 = perfect, 2 = confidently wrong). NaN if empty. */
double cm_calibration_brier(const cm_calibration *c);

#endif
