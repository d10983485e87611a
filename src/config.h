/* config.h - the one declarative table of options.
 *
 * Each entry names a field of conduit_options, its type, bounds, default
 * and help text.  The same table drives defaults, the config file, the
 * CONDUIT_* environment, the --flags, --check-config output and the
 * generated docs/configuration.md.  Key "ws_max_message_size" is
 * environment variable CONDUIT_WS_MAX_MESSAGE_SIZE and flag
 * --ws-max-message-size. */
#ifndef CD_CONFIG_H
#define CD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "conduit.h"

typedef enum cd_conf_type {
    CD_CONF_STR,
    CD_CONF_LIST,        /* char *[CONDUIT_MAX_LISTEN] + size_t count after it */
    CD_CONF_BOOL,
    CD_CONF_U32,
    CD_CONF_BYTES,       /* uint64_t; accepts k/m/g suffixes (KiB, MiB, GiB) */
    CD_CONF_SECONDS,     /* uint32_t; accepts s/m/h suffixes */
    CD_CONF_LOG_LEVEL,   /* int */
    CD_CONF_ENUM,        /* char *, one of `choices` ("a|b|c") */
} cd_conf_type;

enum {
    CD_CONF_SECRET = 1u,   /* masked by --check-config */
    CD_CONF_RELOAD = 2u,   /* applied live on SIGHUP */
    CD_CONF_NO_FILE = 4u,  /* not a file key (e.g. config itself) */
    CD_CONF_ADDRESS = 8u,  /* list of HOST:PORT, checked when set */
    CD_CONF_CIDRS = 16u,   /* comma-separated CIDRs, checked when set */
};

typedef struct cd_conf_entry {
    const char *key;
    cd_conf_type type;
    size_t offset;
    uint64_t min, max;
    const char *def;       /* default in text form; NULL: unset */
    unsigned flags;
    const char *help;
    const char *choices; /* CD_CONF_ENUM: "a|b|c" */
} cd_conf_entry;

const cd_conf_entry *cd_conf_table(size_t *n);
const cd_conf_entry *cd_conf_find(const char *key);
/* Find by flag name without the leading dashes ("ws-max-message-size"). */
const cd_conf_entry *cd_conf_find_flag(const char *flag);

/* Set one entry from text; `origin` prefixes the error ("--workers",
 * "CONDUIT_WORKERS", "conduit.yaml:3: workers"). */
int cd_conf_set(conduit_options *opt, const cd_conf_entry *e,
                const char *value, const char *origin, char *err,
                size_t errlen);

/* Deep copy: dst gets its own strings (free with conduit_options_fini).
 * Returns 0 or CONDUIT_ENOMEM (dst then holds nothing). */
int cd_conf_copy(conduit_options *dst, const conduit_options *src);

/* Empty a list option (the first --listen flag replaces the default). */
void cd_conf_list_clear(conduit_options *opt, const cd_conf_entry *e);

/* Write the effective configuration (YAML, secrets masked). */
void cd_conf_print(const conduit_options *opt, FILE *out);
/* Write the Markdown reference table (docs/configuration.md). */
void cd_conf_print_reference(FILE *out);

#endif
