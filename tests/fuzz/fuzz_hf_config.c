/* libFuzzer target: HF config.json parsing and validation; an accepted config must render back to JSON
 * that parses to the same config. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cm_config c;
    if (cm_config_parse_hf_json((const char *)data, size, "fuzz/config.json", &c) != CM_OK) return 0;
    if (cm_config_validate(&c, "fuzz/config.json") != CM_OK) abort();
    for (int i = 0; i < c.head_dim / 2; i += 7) (void)cm_config_rope_inv_freq(&c, i);
    char *s;
    if (cm_config_to_hf_json(&c, "bfloat16", &s) != CM_OK) abort();
    cm_config back;
    if (cm_config_parse_hf_json(s, strlen(s), "rendered", &back) != CM_OK) abort();
    if (memcmp(&c, &back, sizeof c) != 0) abort();
    free(s);
    return 0;
}
