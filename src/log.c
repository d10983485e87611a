/* log.c - structured JSON-lines logger (see log.h). */
#include "log.h"

#include "json.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void cd_logger_init(cd_logger *lg, cd_log_level level, int fd)
{
    atomic_init(&lg->level, (int)level);
    atomic_init(&lg->fd, fd);
}

int cd_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    if (strcmp(s, "warning") == 0)
        return CD_LOG_WARN;
    return -1;
}

const char *cd_log_level_name(cd_log_level level)
{
    return (unsigned)level < 4 ? level_names[level] : "info";
}

static void put(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    if (*len >= cap)
        return;
    if (n > cap - *len)
        n = cap - *len;
    memcpy(out + *len, s, n);
    *len += n;
}

static void put_fmt(char *out, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void put_fmt(char *out, size_t cap, size_t *len, const char *fmt, ...)
{
    if (*len >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len += (size_t)n < cap - *len ? (size_t)n : cap - *len - 1;
}

/* Emit one "key":value pair for the conversion at *pf; advances *pf. */
static void put_field(char *out, size_t cap, size_t *len, const char **pf,
                      va_list *ap)
{
    const char *f = *pf;
    if (strncmp(f, "s", 1) == 0) {
        const char *s = va_arg(*ap, const char *);
        /* A value too long for what is left of the line is logged as
         * null rather than cut, so the line stays valid JSON. */
        if (s == NULL || cd_json_put_string(out, cap, len, s, strlen(s)) != 0)
            put(out, cap, len, "null", 4);
        *pf = f + 1;
    } else if (strncmp(f, "lld", 3) == 0) {
        put_fmt(out, cap, len, "%lld", va_arg(*ap, long long));
        *pf = f + 3;
    } else if (strncmp(f, "llu", 3) == 0) {
        put_fmt(out, cap, len, "%llu", va_arg(*ap, unsigned long long));
        *pf = f + 3;
    } else if (strncmp(f, "ld", 2) == 0) {
        put_fmt(out, cap, len, "%ld", va_arg(*ap, long));
        *pf = f + 2;
    } else if (strncmp(f, "lu", 2) == 0) {
        put_fmt(out, cap, len, "%lu", va_arg(*ap, unsigned long));
        *pf = f + 2;
    } else if (strncmp(f, "zu", 2) == 0) {
        put_fmt(out, cap, len, "%zu", va_arg(*ap, size_t));
        *pf = f + 2;
    } else if (*f == 'd') {
        put_fmt(out, cap, len, "%d", va_arg(*ap, int));
        *pf = f + 1;
    } else if (*f == 'u') {
        put_fmt(out, cap, len, "%u", va_arg(*ap, unsigned));
        *pf = f + 1;
    } else if (*f == 'f') {
        put_fmt(out, cap, len, "%.3f", va_arg(*ap, double));
        *pf = f + 1;
    } else {
        put(out, cap, len, "null", 4);
        *pf = f + strlen(f);
    }
}

void cd_logv(cd_logger *lg, cd_log_level level, const char *event,
             const char *fmt, va_list ap)
{
    if (!cd_log_enabled(lg, level))
        return;
    char line[LOG_LINE_MAX];
    size_t cap = sizeof(line) - 2; /* room for "}\n" */
    size_t len = 0;

    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    put_fmt(line, cap, &len,
            "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\","
            "\"event\":",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
            tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
            cd_log_level_name(level));
    if (cd_json_put_string(line, cap, &len, event, strlen(event)) != 0)
        put(line, cap, &len, "null", 4);

    va_list aq;
    va_copy(aq, ap);
    const char *f = fmt ? fmt : "";
    while (*f) {
        while (*f == ' ')
            f++;
        const char *eq = strchr(f, '=');
        if (eq == NULL || eq[1] != '%')
            break;
        put(line, cap, &len, ",\"", 2);
        put(line, cap, &len, f, (size_t)(eq - f));
        put(line, cap, &len, "\":", 2);
        f = eq + 2;
        put_field(line, cap, &len, &f, &aq);
    }
    va_end(aq);
    line[len++] = '}';
    line[len++] = '\n';

    int fd = atomic_load_explicit(&lg->fd, memory_order_relaxed);
    const char *p = line;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* nowhere else to report a failing log sink */
        p += n;
        len -= (size_t)n;
    }
}

void cd_log(cd_logger *lg, cd_log_level level, const char *event,
            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cd_logv(lg, level, event, fmt, ap);
    va_end(ap);
}
