/* proxy.c - trusted-proxy CIDR lists, the PROXY protocol v1/v2 parser, and
 * the client address from X-Forwarded-For / Forwarded (see proxy.h).
 *
 * Owns nothing but a CIDR list's entry array.  Invariants:
 *  - The PROXY parser takes every decision on the byte just read, in order,
 *    so feeding the input whole, split anywhere, or byte by byte gives the
 *    same verdict, consumption and addresses.  It never reads past `len`
 *    and never stores more than sizeof(buf) bytes.
 *  - The header walk keeps O(1) state: the answer for the part of the
 *    joined header value read so far, as if it were the whole value. */
#include "proxy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "conduit.h"

/* Longest IPv6 literal with an embedded IPv4 ("ffff:...:255.255.255.255"). */
#define IP_TEXT_MAX 45

/* ------------------------------------------------------------------ */
/* Addresses. */

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Parse an IP literal of exactly n bytes.  family: AF_INET, AF_INET6 or
 * AF_UNSPEC (either).  Fills a (port 0) and returns true on success. */
static bool parse_ip(const char *s, size_t n, int family, cd_addr *a)
{
    char tmp[IP_TEXT_MAX + 1];

    memset(a, 0, sizeof(*a));
    if (n == 0 || n > IP_TEXT_MAX || memchr(s, '\0', n) != NULL)
        return false;                        /* a NUL would end it early */
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    /* inet_pton is strict: no leading zeros, no zone ids, no spaces. */
    struct sockaddr_in *v4 = (struct sockaddr_in *)(void *)&a->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)(void *)&a->ss;
    if (family != AF_INET6 && inet_pton(AF_INET, tmp, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        a->len = sizeof(*v4);
        return true;
    }
    memset(a, 0, sizeof(*a));
    if (family != AF_INET && inet_pton(AF_INET6, tmp, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        a->len = sizeof(*v6);
        return true;
    }
    memset(a, 0, sizeof(*a));
    return false;
}

/* 1..5 digits, 0..65535; leading zeros allowed only when allow_zeros. */
static bool parse_port(const char *s, size_t n, bool allow_zeros, uint16_t *port)
{
    uint32_t v = 0;
    if (n == 0 || n > 5 || (!allow_zeros && n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

static void set_port(cd_addr *a, uint16_t port)
{
    if (a->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)(void *)&a->ss)->sin_port = htons(port);
    else if (a->ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)(void *)&a->ss)->sin6_port = htons(port);
}

/* The 128-bit form: IPv4 as ::ffff:a.b.c.d.  False for other families. */
static bool addr16(const struct sockaddr *sa, socklen_t len, uint8_t out[16])
{
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        memcpy(out, v4_mapped, 12);
        memcpy(out + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        memcpy(out, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

/* ------------------------------------------------------------------ */
/* CIDR lists. */

void cd_cidr_list_init(cd_cidr_list *l)
{
    l->v = NULL;
    l->n = l->cap = 0;
}

void cd_cidr_list_fini(cd_cidr_list *l)
{
    free(l->v);
    cd_cidr_list_init(l);
}

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, net, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == net[whole];
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* One entry, exactly [s, s+n), already trimmed. */
static int parse_cidr(const char *s, size_t n, cd_cidr *c, char *err, size_t errlen)
{
    const char *slash = memchr(s, '/', n);
    size_t alen = slash ? (size_t)(slash - s) : n;
    cd_addr a;
    int shown = (int)CD_MIN(n, 64);

    if (!parse_ip(s, alen, AF_UNSPEC, &a)) {
        snprintf(err, errlen, "\"%.*s\" is not an IP address or CIDR", shown, s);
        return CONDUIT_EINVAL;
    }
    unsigned max = a.ss.ss_family == AF_INET ? 32 : 128;
    unsigned bits = max;
    if (slash != NULL) {
        const char *b = slash + 1;
        size_t blen = n - alen - 1;
        unsigned v = 0;
        bool ok = blen >= 1 && blen <= 3 && !(blen > 1 && b[0] == '0');
        for (size_t i = 0; ok && i < blen; i++) {
            ok = b[i] >= '0' && b[i] <= '9';
            v = v * 10 + (unsigned)(b[i] - '0');
        }
        if (!ok || v > max) {
            snprintf(err, errlen, "bad prefix length in \"%.*s\" (0..%u)", shown, s, max);
            return CONDUIT_EINVAL;
        }
        bits = v;
    }
    addr16((const struct sockaddr *)&a.ss, a.len, c->addr);
    c->bits = (uint8_t)(bits + (max == 32 ? 96 : 0));
    uint8_t masked[16] = {0};
    memcpy(masked, c->addr, c->bits / 8);
    if (c->bits % 8)
        masked[c->bits / 8] = (uint8_t)(c->addr[c->bits / 8] & (0xff << (8 - c->bits % 8)));
    if (memcmp(masked, c->addr, 16) != 0) {
        char want[INET6_ADDRSTRLEN];
        if (max == 32)
            inet_ntop(AF_INET, masked + 12, want, sizeof(want));
        else
            inet_ntop(AF_INET6, masked, want, sizeof(want));
        snprintf(err, errlen, "host bits set in \"%.*s\" (did you mean %s/%u?)",
                 shown, s, want, bits);
        return CONDUIT_EINVAL;
    }
    return 0;
}

int cd_cidr_list_parse(cd_cidr_list *l, const char *text, char *err,
                       size_t errlen)
{
    const char *p = text;
    size_t n_new = 0;

    while (is_blank(*p))
        p++;
    if (*p == '\0')
        return 0;
    /* Count first, so the list grows once and is unchanged on error. */
    for (const char *q = p; *q; q++)
        n_new += *q == ',';
    n_new++;
    if (l->n + n_new > CD_CIDR_MAX) {
        snprintf(err, errlen, "more than %u CIDR entries", CD_CIDR_MAX);
        return CONDUIT_EINVAL;
    }
    cd_cidr *tmp = malloc(n_new * sizeof(*tmp));
    if (tmp == NULL)
        return CONDUIT_ENOMEM;
    size_t k = 0;
    for (;;) {
        while (is_blank(*p))
            p++;
        const char *end = p;
        while (*end != '\0' && *end != ',')
            end++;
        const char *last = end;
        while (last > p && is_blank(last[-1]))
            last--;
        if (last == p) {
            snprintf(err, errlen, "empty entry in CIDR list \"%.64s\"", text);
            free(tmp);
            return CONDUIT_EINVAL;
        }
        int rc = parse_cidr(p, (size_t)(last - p), &tmp[k], err, errlen);
        if (rc != 0) {
            free(tmp);
            return rc;
        }
        k++;
        if (*end == '\0')
            break;
        p = end + 1;
    }
    if (l->n + k > l->cap) {
        cd_cidr *v = realloc(l->v, (l->n + k) * sizeof(*v));
        if (v == NULL) {
            free(tmp);
            return CONDUIT_ENOMEM;
        }
        l->v = v;
        l->cap = l->n + k;
    }
    memcpy(l->v + l->n, tmp, k * sizeof(*tmp));
    l->n += k;
    free(tmp);
    return 0;
}

bool cd_cidr_list_match(const cd_cidr_list *l, const struct sockaddr *sa,
                        socklen_t len)
{
    uint8_t a[16];
    if (l == NULL || sa == NULL || !addr16(sa, len, a))
        return false;
    for (size_t i = 0; i < l->n; i++)
        if (prefix_match(a, l->v[i].addr, l->v[i].bits))
            return true;
    return false;
}

bool cd_cidr_list_match_addr(const cd_cidr_list *l, const cd_addr *a)
{
    return cd_cidr_list_match(l, (const struct sockaddr *)&a->ss, a->len);
}

/* ------------------------------------------------------------------ */
/* PROXY protocol. */

enum {
    S_START,
    S_V1,               /* "PROXY ..." up to CR */
    S_V1_LF,            /* CR seen */
    S_V2_HDR,           /* the 16 fixed bytes */
    S_V2_ADDR,          /* address block: `skip` bytes, stored if has_addr */
    S_V2_TLV_TYPE,
    S_V2_TLV_LEN_HI,
    S_V2_TLV_LEN_LO,
    S_V2_TLV_VALUE,     /* `skip` bytes */
    S_V2_DISCARD,       /* LOCAL or UNSPEC: the rest of the block */
    S_DONE,
    S_ERROR,
};

/* Spec §2.2: the 12-byte v2 signature. */
static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_sig[] = "PROXY ";
#define V2_FIXED 16u

void cd_proxy_parser_init(cd_proxy_parser *p)
{
    memset(p, 0, sizeof(*p));
    p->state = S_START;
}

static int fail(cd_proxy_parser *p, const char *why)
{
    p->state = S_ERROR;
    p->error_reason = why;
    p->has_addr = false;
    return CD_PROXY_ERROR;
}

static int done(cd_proxy_parser *p)
{
    p->state = S_DONE;
    return CD_PROXY_DONE;
}

/* Split the v1 line (NUL-terminated in buf, CRLF excluded) and check each
 * field (spec §2.1). */
static int v1_finish(cd_proxy_parser *p)
{
    const char *line = (const char *)p->buf + 6;   /* after "PROXY " */
    const char *f[5];
    size_t fl[5], n = 0;

    p->version = 1;
    p->command = CD_PROXY_CMD_PROXY;
    /* "UNKNOWN" then CRLF or a space and anything: use the socket's. */
    if (strncmp(line, "UNKNOWN", 7) == 0 && (line[7] == '\0' || line[7] == ' '))
        return done(p);
    for (const char *s = line;; s++) {
        const char *e = strchr(s, ' ');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (n == 5 || len == 0)
            return fail(p, "v1: wrong number of fields or extra spaces");
        f[n] = s;
        fl[n++] = len;
        if (e == NULL)
            break;
        s = e;
    }
    if (n != 5)
        return fail(p, "v1: wrong number of fields");
    int family;
    if (fl[0] == 4 && memcmp(f[0], "TCP4", 4) == 0)
        family = AF_INET;
    else if (fl[0] == 4 && memcmp(f[0], "TCP6", 4) == 0)
        family = AF_INET6;
    else
        return fail(p, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
    uint16_t sport, dport;
    if (!parse_ip(f[1], fl[1], family, &p->src) || !parse_ip(f[2], fl[2], family, &p->dst))
        return fail(p, "v1: bad address for the protocol");
    if (!parse_port(f[3], fl[3], false, &sport) || !parse_port(f[4], fl[4], false, &dport))
        return fail(p, "v1: bad port");
    set_port(&p->src, sport);
    set_port(&p->dst, dport);
    p->has_addr = true;
    return done(p);
}

/* Address block size per family byte (spec §2.2), for the PROXY command. */
static int v2_addr_size(uint8_t fam)
{
    switch (fam) {
    case 0x11: case 0x12: return 12;   /* TCP/UDP over IPv4 */
    case 0x21: case 0x22: return 36;   /* TCP/UDP over IPv6 */
    case 0x31: case 0x32: return 216;  /* UNIX stream/datagram */
    case 0x00: return 0;               /* UNSPEC */
    default: return -1;                /* "must be rejected as invalid" */
    }
}

static void v2_take_addresses(cd_proxy_parser *p)
{
    const uint8_t *b = p->buf + V2_FIXED;
    memset(&p->src, 0, sizeof(p->src));
    memset(&p->dst, 0, sizeof(p->dst));
    if (p->fam == 0x11) {
        struct sockaddr_in *s = (struct sockaddr_in *)(void *)&p->src.ss;
        struct sockaddr_in *d = (struct sockaddr_in *)(void *)&p->dst.ss;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, b, 4);
        memcpy(&d->sin_addr, b + 4, 4);
        memcpy(&s->sin_port, b + 8, 2);  /* both in network order */
        memcpy(&d->sin_port, b + 10, 2);
        p->src.len = p->dst.len = sizeof(*s);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)(void *)&p->src.ss;
        struct sockaddr_in6 *d = (struct sockaddr_in6 *)(void *)&p->dst.ss;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, b, 16);
        memcpy(&d->sin6_addr, b + 16, 16);
        memcpy(&s->sin6_port, b + 32, 2);
        memcpy(&d->sin6_port, b + 34, 2);
        p->src.len = p->dst.len = sizeof(*s);
    }
    p->has_addr = true;
}

/* At a TLV boundary: the block must end here or hold a whole TLV header. */
static int v2_next_tlv(cd_proxy_parser *p)
{
    if (p->remain == 0)
        return done(p);
    if (p->remain < 3)
        return fail(p, "v2: truncated TLV");
    p->state = S_V2_TLV_TYPE;
    return CD_PROXY_NEED_MORE;
}

/* The 16th fixed byte has been stored: check the header as a whole. */
static int v2_fixed_done(cd_proxy_parser *p)
{
    uint8_t cmd = p->buf[12] & 0x0f;
    uint16_t block = (uint16_t)(p->buf[14] << 8 | p->buf[15]);

    if (V2_FIXED + (uint32_t)block > CD_PROXY_V2_MAX)
        return fail(p, "v2: header longer than 4096 bytes");
    p->remain = block;
    p->fam = p->buf[13];
    /* Spec §2.2: LOCAL discards the block, family included; UNSPEC means
     * "use the real endpoints". */
    if (cmd == CD_PROXY_CMD_LOCAL || p->fam == 0x00) {
        if (p->remain == 0)
            return done(p);
        p->state = S_V2_DISCARD;
        return CD_PROXY_NEED_MORE;
    }
    int need = v2_addr_size(p->fam);     /* >= 12: checked at byte 14 */
    if (block < need)
        return fail(p, "v2: length too short for the address family");
    p->skip = (uint16_t)need;
    p->state = S_V2_ADDR;
    return CD_PROXY_NEED_MORE;
}

static int v2_fixed_byte(cd_proxy_parser *p, uint8_t c)
{
    size_t i = p->len;
    p->buf[p->len++] = c;
    if (i < sizeof(v2_sig)) {
        if (c != v2_sig[i])
            return fail(p, "v2: bad signature");
    } else if (i == 12) {
        /* Spec §2.2: version 2; command LOCAL (0) or PROXY (1), others
         * "must be dropped". */
        if ((c >> 4) != 2)
            return fail(p, "v2: version is not 2");
        if ((c & 0x0f) > 1)
            return fail(p, "v2: unknown command");
        p->command = c & 0x0f;
    } else if (i == 13) {
        if (p->command == CD_PROXY_CMD_PROXY && v2_addr_size(c) < 0)
            return fail(p, "v2: unknown address family or transport");
    } else if (i == V2_FIXED - 1) {
        return v2_fixed_done(p);
    }
    return CD_PROXY_NEED_MORE;
}

static int step(cd_proxy_parser *p, uint8_t c)
{
    switch (p->state) {
    case S_START:
        if (c == 'P') {
            p->version = 1;
            p->state = S_V1;
        } else if (c == v2_sig[0]) {
            p->version = 2;
            p->state = S_V2_HDR;
            return v2_fixed_byte(p, c);
        } else {
            return fail(p, "not a PROXY protocol header");
        }
        p->buf[p->len++] = c;
        return CD_PROXY_NEED_MORE;
    case S_V1:
        if (p->len < sizeof(v1_sig) - 1 && c != (uint8_t)v1_sig[p->len])
            return fail(p, "v1: bad signature");
        if (c == '\r') {
            p->state = S_V1_LF;
            return CD_PROXY_NEED_MORE;
        }
        if (c < 0x20 || c > 0x7e)
            return fail(p, "v1: byte that is not printable ASCII");
        if (p->len + 2u >= CD_PROXY_V1_MAX)  /* this byte and CRLF */
            return fail(p, "v1: line longer than 107 bytes");
        p->buf[p->len++] = c;
        return CD_PROXY_NEED_MORE;
    case S_V1_LF:
        if (c != '\n')
            return fail(p, "v1: CR not followed by LF");
        p->buf[p->len] = '\0';
        return v1_finish(p);
    case S_V2_HDR:
        return v2_fixed_byte(p, c);
    case S_V2_ADDR:
        p->remain--;
        if (p->fam == 0x11 || p->fam == 0x21)
            p->buf[p->len++] = c;            /* <= 16 + 36 bytes */
        if (--p->skip != 0)
            return CD_PROXY_NEED_MORE;
        if (p->fam == 0x11 || p->fam == 0x21)
            v2_take_addresses(p);
        return v2_next_tlv(p);
    case S_V2_TLV_TYPE:
        p->remain--;
        p->state = S_V2_TLV_LEN_HI;
        return CD_PROXY_NEED_MORE;
    case S_V2_TLV_LEN_HI:
        p->remain--;
        p->tlv_len = (uint16_t)(c << 8);
        p->state = S_V2_TLV_LEN_LO;
        return CD_PROXY_NEED_MORE;
    case S_V2_TLV_LEN_LO:
        p->remain--;
        p->tlv_len |= c;
        if (p->tlv_len > p->remain)
            return fail(p, "v2: TLV longer than the header");
        if (p->tlv_len == 0)
            return v2_next_tlv(p);
        p->skip = p->tlv_len;
        p->state = S_V2_TLV_VALUE;
        return CD_PROXY_NEED_MORE;
    case S_V2_TLV_VALUE:
        p->remain--;
        if (--p->skip != 0)
            return CD_PROXY_NEED_MORE;
        return v2_next_tlv(p);
    case S_V2_DISCARD:
        if (--p->remain != 0)
            return CD_PROXY_NEED_MORE;
        return done(p);
    default:
        return fail(p, "parser in a bad state");
    }
}

int cd_proxy_parse(cd_proxy_parser *p, const uint8_t *data, size_t len,
                   size_t *consumed)
{
    *consumed = 0;
    if (p->state == S_DONE)
        return CD_PROXY_DONE;
    if (p->state == S_ERROR)
        return CD_PROXY_ERROR;
    for (size_t i = 0; i < len; i++) {
        int rc = step(p, data[i]);
        if (rc != CD_PROXY_NEED_MORE) {
            *consumed = i + 1;
            return rc;
        }
    }
    *consumed = len;
    return CD_PROXY_NEED_MORE;
}

/* ------------------------------------------------------------------ */
/* X-Forwarded-For and Forwarded. */

/* A cursor over the header lines as if joined with ", " (RFC 9110 §5.3).
 * `sep` counts the separator bytes still to yield before line i. */
typedef struct cursor {
    const cd_proxy_hdr *v;
    size_t n, i, pos;
    unsigned sep;
} cursor;

static void cur_settle(cursor *c)
{
    while (c->sep == 0 && c->i < c->n && c->pos >= c->v[c->i].len) {
        c->i++;
        c->pos = 0;
        if (c->i < c->n)
            c->sep = 2;
    }
}

static int cur_peek(const cursor *c)
{
    if (c->i >= c->n)
        return -1;
    if (c->sep != 0)
        return c->sep == 2 ? ',' : ' ';
    return (unsigned char)c->v[c->i].value[c->pos];
}

static void cur_next(cursor *c)
{
    if (c->sep != 0)
        c->sep--;
    else
        c->pos++;
    cur_settle(c);
}

static void cur_skip_ows(cursor *c)
{
    while (cur_peek(c) == ' ' || cur_peek(c) == '\t')
        cur_next(c);
}

/* The answer for the elements read so far (see the file comment). */
enum { W_NONE, W_STOP, W_ADDR };
typedef struct walk {
    int kind;
    int source;
    cd_addr addr;
    const cd_cidr_list *trusted;
} walk;

/* Append one element to the right of those already walked. */
static void walk_feed(walk *w, bool is_addr, const cd_addr *a)
{
    if (!is_addr) {
        w->kind = W_STOP;                    /* a right-to-left walk stops here */
        return;
    }
    if (!cd_cidr_list_match_addr(w->trusted, a)) {
        w->kind = W_ADDR;                    /* the walk ends here first */
        w->source = CD_CLIENT_HEADER;
        w->addr = *a;
        return;
    }
    /* A trusted hop is skipped: the answer is the left part's, unless the
     * left part ends the walk on "the last trusted hop", which is now a. */
    if (w->kind == W_ADDR)
        return;
    w->source = w->kind == W_STOP ? CD_CLIENT_FALLBACK : CD_CLIENT_HEADER;
    w->kind = W_ADDR;
    w->addr = *a;
}

/* "IP", "IP:port" or "[IP]", "[IP]:port" in [s, s+n).  Forwarded requires
 * brackets for IPv6 (RFC 7239 §6) and allows an obfuscated port. */
static bool parse_node(const char *s, size_t n, bool is_forwarded, cd_addr *a)
{
    const char *host = s, *port = NULL;
    size_t hlen = n, plen = 0;
    int family = AF_INET;
    uint16_t pv = 0;

    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL)
            return false;
        host = s + 1;
        hlen = (size_t)(close - host);
        family = AF_INET6;
        size_t after = n - (size_t)(close - s) - 1;
        if (after > 0) {
            if (close[1] != ':')
                return false;
            port = close + 2;
            plen = after - 1;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon != NULL && memchr(colon + 1, ':', n - (size_t)(colon - s) - 1) != NULL) {
            if (is_forwarded)
                return false;                /* bare IPv6: brackets required */
            family = AF_INET6;
        } else if (colon != NULL) {
            hlen = (size_t)(colon - s);
            port = colon + 1;
            plen = n - hlen - 1;
        }
    }
    if (!parse_ip(host, hlen, family, a))
        return false;
    if (port != NULL) {
        if (is_forwarded && plen >= 2 && port[0] == '_') {
            /* obfport = "_" 1*(ALPHA / DIGIT / "." / "_" / "-") */
            for (size_t i = 1; i < plen; i++) {
                char ch = port[i];
                bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                          (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
                if (!ok)
                    return false;
            }
        } else if (!parse_port(port, plen, true, &pv)) {
            return false;
        }
    }
    set_port(a, pv);
    return true;
}

/* A token or quoted value is kept only up to this; a longer one cannot be
 * an address ("[ipv6]:port" is at most 47 bytes) and is read but dropped. */
#define NODE_MAX 64

typedef struct text {
    char b[NODE_MAX];
    size_t n;
    bool is_long;
} text;

static void text_add(text *t, int ch)
{
    if (t->n < sizeof(t->b))
        t->b[t->n++] = (char)ch;
    else
        t->is_long = true;
}

static void walk_xff(walk *w, cursor *c)
{
    for (;;) {
        cur_skip_ows(c);
        int ch = cur_peek(c);
        if (ch < 0)
            return;
        if (ch == ',') {                     /* empty member */
            cur_next(c);
            continue;
        }
        /* Blanks are kept out of the text: trailing ones are OWS, inner
         * ones make the member invalid. */
        text t = {.n = 0};
        bool has_blank = false, is_bad = false;
        while ((ch = cur_peek(c)) >= 0 && ch != ',') {
            if (is_blank((char)ch)) {
                has_blank = true;
            } else {
                is_bad |= has_blank;
                text_add(&t, ch);
            }
            cur_next(c);
        }
        cd_addr a;
        walk_feed(w, !is_bad && !t.is_long && parse_node(t.b, t.n, false, &a), &a);
    }
}

/* RFC 9110 §5.6.2 tchar. */
static bool is_tchar(int ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch > 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* RFC 9110 §5.6.4 qdtext and the byte after a backslash. */
static bool is_qdtext(int ch)
{
    return ch == '\t' || ch == ' ' || ch == 0x21 || (ch >= 0x23 && ch <= 0x5b) ||
           (ch >= 0x5d && ch <= 0x7e) || ch >= 0x80;
}

static bool is_quoted_pair_char(int ch)
{
    return ch == '\t' || (ch >= 0x20 && ch <= 0x7e) || ch >= 0x80;
}

/* After a syntax error: skip to the ',' that ends the element, honouring
 * quoted strings (an unterminated one runs to the end).  in_quote: the
 * error was inside a quoted string, which is still open. */
static void resync(cursor *c, bool in_quote)
{
    int ch;
    while ((ch = cur_peek(c)) >= 0) {
        if (!in_quote && ch == ',')
            return;
        cur_next(c);
        if (in_quote && ch == '\\' && cur_peek(c) >= 0)
            cur_next(c);
        else if (ch == '"')
            in_quote = !in_quote;
    }
}

enum { VALUE_OK, VALUE_BAD, VALUE_BAD_IN_QUOTES };

/* value = token / quoted-string.  Returns VALUE_OK, VALUE_BAD, or
 * VALUE_BAD_IN_QUOTES when the error leaves a quoted string open. */
static int read_value(cursor *c, text *t)
{
    int ch = cur_peek(c);
    if (ch != '"') {
        while (is_tchar(cur_peek(c))) {
            text_add(t, cur_peek(c));
            cur_next(c);
        }
        return t->n > 0 || t->is_long ? VALUE_OK : VALUE_BAD;
    }
    cur_next(c);
    for (;;) {
        ch = cur_peek(c);
        if (ch < 0)
            return VALUE_BAD;                /* unterminated: at the end */
        if (ch == '"') {
            cur_next(c);
            return VALUE_OK;
        }
        if (ch == '\\') {
            cur_next(c);
            ch = cur_peek(c);
            if (ch < 0)
                return VALUE_BAD;
            if (!is_quoted_pair_char(ch))
                return VALUE_BAD_IN_QUOTES;
        } else if (!is_qdtext(ch)) {
            return VALUE_BAD_IN_QUOTES;
        }
        cur_next(c);
        text_add(t, ch);
    }
}

/* One forwarded-element (RFC 7239 §4), the cursor at its first byte.  On
 * return the cursor is at the ',' that ends it, or at the end.  True with
 * *a set when it is valid and its for= is an address. */
static bool forwarded_element(cursor *c, cd_addr *a)
{
    bool has_for = false, is_addr = false, in_quote = false;

    for (;;) {
        cur_skip_ows(c);
        int ch = cur_peek(c);
        if (ch < 0 || ch == ',')
            return has_for && is_addr;
        if (ch == ';') {                     /* empty pair */
            cur_next(c);
            continue;
        }
        char name[4];
        size_t nlen = 0;
        while (is_tchar(cur_peek(c))) {
            if (nlen < sizeof(name))
                name[nlen] = (char)cur_peek(c);
            nlen++;
            cur_next(c);
        }
        if (nlen == 0 || cur_peek(c) != '=')
            goto syntax;
        cur_next(c);
        text t = {.n = 0};
        int rv = read_value(c, &t);
        if (rv != VALUE_OK) {
            in_quote = rv == VALUE_BAD_IN_QUOTES;
            goto syntax;
        }
        if (nlen == 3 && strncasecmp(name, "for", 3) == 0) {
            if (has_for)
                goto syntax;                 /* §4: each parameter at most once */
            has_for = true;
            is_addr = !t.is_long && parse_node(t.b, t.n, true, a);
        }
        cur_skip_ows(c);
        ch = cur_peek(c);
        if (ch == ';')
            cur_next(c);
        else if (ch >= 0 && ch != ',')
            goto syntax;
    }
syntax:
    resync(c, in_quote);
    return false;
}

static void walk_forwarded(walk *w, cursor *c)
{
    for (;;) {
        cur_skip_ows(c);
        int ch = cur_peek(c);
        if (ch < 0)
            return;
        if (ch == ',') {                     /* empty member */
            cur_next(c);
            continue;
        }
        cd_addr a;
        bool ok = forwarded_element(c, &a);
        walk_feed(w, ok, &a);
    }
}

int cd_proxy_client_addr(const cd_cidr_list *trusted, const cd_addr *peer,
                         enum cd_proxy_header_kind kind,
                         const cd_proxy_hdr *values, size_t n_values,
                         cd_addr *out)
{
    *out = *peer;
    if (!cd_cidr_list_match_addr(trusted, peer))
        return CD_CLIENT_PEER;               /* its headers are its own claim */
    walk w = {.kind = W_NONE, .trusted = trusted};
    cursor c = {.v = values, .n = n_values};
    cur_settle(&c);
    if (kind == CD_PROXY_FORWARDED)
        walk_forwarded(&w, &c);
    else
        walk_xff(&w, &c);
    if (w.kind == W_NONE)
        return CD_CLIENT_PEER;
    if (w.kind == W_STOP)
        return CD_CLIENT_FALLBACK;
    *out = w.addr;
    return w.source;
}
