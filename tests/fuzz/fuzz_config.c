/*
 * libFuzzer target for the configuration parser: any bytes either give a config or an error
 * list, never a crash, hang or leak. Also checks the contract main.c relies on: a config comes
 * with no error text, a rejection always comes with some, one "FILE:..." line each.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "ratelimitd/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *errors = NULL;
    rl_config_t *config = rl_config_parse("fuzz.yaml", (const char *)data, size, &errors);
    if (config != NULL) {
        assert(errors == NULL);
        assert(config->num_listen >= 1);
        for (size_t i = 0; i < config->limits.num_keys; ++i)
            assert(config->limits.keys[i].tier_index < config->limits.num_tiers);
        assert(config->backend.type != RL_BACKEND_MEMCACHED || config->backend.num_servers >= 1);
        rl_config_destroy(config);
    } else {
        assert(errors != NULL && strncmp(errors, "fuzz.yaml:", 10) == 0);
        assert(errors[strlen(errors) - 1] == '\n');
        free(errors);
    }
    return 0;
}
