/* log.h - structured logs: one JSON object per line.
 *
 * A logger belongs to a server (no process-wide state).  Lines are built in
 * a stack buffer and written with one write(2), so lines from several
 * workers never interleave.  Fields are given as a tiny format,
 * "key=%s key2=%d ...": every %s value is JSON-escaped (json.c's
 * cd_json_put_string), so callers cannot break the line format with
 * hostile input. */
#ifndef CD_LOG_H
#define CD_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum cd_log_level {
    CD_LOG_DEBUG = 0,
    CD_LOG_INFO = 1,
    CD_LOG_WARN = 2,
    CD_LOG_ERROR = 3,
} cd_log_level;

typedef struct cd_logger {
    atomic_int level;        /* lines below this level are dropped */
    atomic_int fd;           /* 2 (stderr) or a log file, swapped on reopen */
} cd_logger;

void cd_logger_init(cd_logger *lg, cd_log_level level, int fd);

static inline bool cd_log_enabled(cd_logger *lg, cd_log_level level)
{
    return (int)level >= atomic_load_explicit(&lg->level, memory_order_relaxed);
}

/* Parse "debug", "info", "warn", "error"; returns -1 when unknown. */
int cd_log_level_parse(const char *s);
const char *cd_log_level_name(cd_log_level level);

/* Log `event` with fields.  Format: space-separated "key=%CONV" items where
 * CONV is one of s (string, escaped; NULL prints null), d (int), u
 * (unsigned), ld, lu, lld, llu, zu, f (double).  The printf attribute makes
 * the compiler check every argument against its conversion.  Example:
 *   cd_log(lg, CD_LOG_INFO, "listening", "addr=%s worker=%d", a, id); */
void cd_log(cd_logger *lg, cd_log_level level, const char *event,
            const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void cd_logv(cd_logger *lg, cd_log_level level, const char *event,
             const char *fmt, va_list ap);

#endif
