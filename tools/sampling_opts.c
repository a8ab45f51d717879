#include "sampling_opts.h"

#include <time.h>

#include "commands.h"

void sampling_opts_init(sampling_opts *o) {
    o->params = cm_sampler_defaults();
    o->samplers = NULL;
    o->seed_given = false;
}

void sampling_opts_specs(sampling_opts *o, arg_spec *specs) {
    cm_sampler_params *p = &o->params;
    arg_spec s[SAMPLING_OPTS_N_SPECS] = {
        {"temperature", 0, ARG_FLOAT, &p->temperature, NULL},
        {"temp", 0, ARG_FLOAT, &p->temperature, NULL},
        {"top-k", 0, ARG_INT, &p->top_k, NULL},
        {"top-p", 0, ARG_FLOAT, &p->top_p, NULL},
        {"min-p", 0, ARG_FLOAT, &p->min_p, NULL},
        {"repeat-penalty", 0, ARG_FLOAT, &p->repeat_penalty, NULL},
        {"repeat-last-n", 0, ARG_INT, &p->repeat_last_n, NULL},
        {"samplers", 0, ARG_STRING, &o->samplers, NULL},
        {"seed", 's', ARG_U64, &p->seed, &o->seed_given},
    };
    for (int i = 0; i < SAMPLING_OPTS_N_SPECS; i++) specs[i] = s[i];
}

int sampling_opts_resolve(sampling_opts *o) {
    if (!o->seed_given) o->params.seed = (uint64_t)time(NULL);
    if ((o->samplers && cm_sampler_parse_order(o->samplers, &o->params) != CM_OK) ||
        cm_sampler_params_validate(&o->params) != CM_OK)
        return cli_fail_status();
    return 0;
}
