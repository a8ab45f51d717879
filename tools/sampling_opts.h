/* The sampling options generate and chat share: their argument specs, help text and resolution. */
#ifndef CAMELID_SAMPLING_OPTS_H
#define CAMELID_SAMPLING_OPTS_H

#include "args.h"
#include "camelid/sampler.h"

typedef struct sampling_opts {
    cm_sampler_params params;
    const char *samplers;
    bool seed_given;
} sampling_opts;

#define SAMPLING_OPTS_N_SPECS 9

void sampling_opts_init(sampling_opts *o);
/* Fill SAMPLING_OPTS_N_SPECS specs pointing into `o`. */
void sampling_opts_specs(sampling_opts *o, arg_spec *specs);
/* Seed from the clock when none was given, parse the stage order, validate. Reports errors; returns 0 or 1.
 */
int sampling_opts_resolve(sampling_opts *o);

#define SAMPLING_OPTS_HELP                                                                                   \
    "  --temperature T         sampling temperature (default 0.8; 0 = greedy)\n"                             \
    "  --temp T                same as --temperature\n"                                                      \
    "  --top-k K               keep the K most likely tokens (default 40; 0 = off)\n"                        \
    "  --top-p P               keep the smallest set with probability mass > P (default 0.95; 1 = off)\n"    \
    "  --min-p P               drop tokens below P x the top probability (default 0.05; 0 = off)\n"          \
    "  --repeat-penalty R      penalise recently seen tokens (default 1.0 = off)\n"                          \
    "  --repeat-last-n N       how many recent tokens the penalty looks at (default 64; -1 = all)\n"         \
    "  --samplers LIST         order of the sampling stages, ';'-separated (default\n"                       \
    "                          \"top_k;top_p;min_p;temperature\", as llama.cpp; llama2.c's is "              \
    "\"temperature;top_p\")\n"                                                                               \
    "  -s, --seed S            random seed (default: from the clock; printed to stderr)\n"

#endif
