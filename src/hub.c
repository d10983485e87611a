/* hub.c - channel registry, subscriptions, presence and fan-out (hub.h).
 *
 * Owns: the registry of channels, each channel's presence table, the user
 * table, and in-flight deliveries.  Invariants: a subscription is linked
 * both from its member (member -> channels) and from its channel's list
 * for the member's worker (channel -> subscribers); a channel lives while
 * it has references (one per subscription, one per in-flight delivery);
 * ch->n_subs equals the sum of ch->worker_subs[] and of the presence
 * counts. */
#include "hub.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "common.h"
#include "conduit.h"

#define N_SHARDS 64

typedef struct pres_entry {
    struct pres_entry *next;
    uint64_t hash;
    uint32_t n;
    char user[];
} pres_entry;

typedef struct pres_table {
    pres_entry **buckets;
    uint32_t n_buckets;
    uint32_t n_entries;
} pres_table;

struct cd_channel {
    cd_channel *reg_next;
    uint64_t hash;
    uint32_t refs;                    /* under the registry shard lock */
    pthread_mutex_t lock;
    uint64_t offset;                  /* last offset given out */
    uint32_t n_subs;
    const cd_ns_options *ns;
    char epoch[17];
    pres_table presence;
    cd_sub **local;                   /* [n_workers]: that worker's subscriptions */
    uint32_t *worker_subs;            /* [n_workers] */
    uint16_t name_len;
    char *name;
};

struct cd_sub {
    cd_channel *ch;
    cd_member *m;
    cd_sub *ch_next, *ch_prev;
    cd_sub *m_next;
    uint64_t from_offset;             /* messages at or below came before us */
};

typedef struct reg_shard {
    pthread_mutex_t lock;
    cd_channel **buckets;
    uint32_t n_buckets;
    uint32_t n_channels;
} reg_shard;

typedef struct user_entry {
    struct user_entry *next;
    uint64_t hash;
    uint32_t n;
    char user[];
} user_entry;

typedef struct user_shard {
    pthread_mutex_t lock;
    pres_table users;                 /* reuses the presence table shape */
} user_shard;

typedef struct hub_msg hub_msg;

typedef struct hub_post {
    cd_post post;
    hub_msg *msg;
    unsigned worker;
} hub_post;

struct hub_msg {
    atomic_uint refs;
    cd_hub *hub;
    cd_channel *ch;                   /* referenced; NULL for broadcast-all */
    cd_frame *frame;
    uint64_t offset;                  /* 0 for events */
    uint64_t exclude;
    hub_post posts[];                 /* one per worker */
};

struct cd_hub {
    cd_hub_config cfg;
    char **ns_names;
    cd_ns_options *ns_options;
    atomic_size_t n_channels;
    uint64_t epoch_seed;
    atomic_uint_fast64_t epoch_counter;
    reg_shard shards[N_SHARDS];
    user_shard users[N_SHARDS];
};

/* ------------------------------------------------------------------ */
/* Small helpers. */

static uint64_t hash_bytes(const char *p, size_t len)
{
    /* FNV-1a: names are short, and this keeps the code dependency-free. */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t now_ms_realtime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

bool cd_hub_channel_name_valid(const char *name, size_t len)
{
    static const char extra[] = "_-:.@,=/+#!$*~";
    if (len == 0 || len > CD_CHANNEL_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || (c != '\0' && strchr(extra, c) != NULL);
        if (!ok)
            return false;
    }
    return true;
}

const cd_ns_options *cd_hub_ns(const cd_hub *h, const char *name, size_t len)
{
    const char *colon = memchr(name, ':', len);
    if (colon == NULL)
        return &h->cfg.defaults;
    size_t nlen = (size_t)(colon - name);
    for (size_t i = 0; i < h->cfg.n_ns; i++)
        if (strlen(h->ns_names[i]) == nlen && strncasecmp(h->ns_names[i], name, nlen) == 0)
            return &h->ns_options[i];
    return &h->cfg.defaults;
}

/* ------------------------------------------------------------------ */
/* Presence tables (also used for the user table). */

static pres_entry **pres_find(pres_table *t, const char *user, uint64_t hash)
{
    if (t->n_buckets == 0)
        return NULL;
    pres_entry **pp = &t->buckets[hash & (t->n_buckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == hash && strcmp((*pp)->user, user) == 0)
            return pp;
    return NULL;
}

static int pres_grow(pres_table *t)
{
    uint32_t n = t->n_buckets ? t->n_buckets * 2 : 8;
    pres_entry **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return CONDUIT_ENOMEM;
    for (uint32_t i = 0; i < t->n_buckets; i++) {
        pres_entry *e = t->buckets[i];
        while (e) {
            pres_entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->n_buckets = n;
    return 0;
}

/* Add one to user's count; *first says it was 0.  Returns 0 or ENOMEM. */
static int pres_inc(pres_table *t, const char *user, bool *first)
{
    uint64_t hash = hash_bytes(user, strlen(user));
    pres_entry **pp = pres_find(t, user, hash);
    if (pp) {
        (*pp)->n++;
        *first = false;
        return 0;
    }
    if (t->n_entries >= t->n_buckets && pres_grow(t) != 0)
        return CONDUIT_ENOMEM;
    size_t ulen = strlen(user);
    pres_entry *e = malloc(sizeof(*e) + ulen + 1);
    if (e == NULL)
        return CONDUIT_ENOMEM;
    e->hash = hash;
    e->n = 1;
    memcpy(e->user, user, ulen + 1);
    e->next = t->buckets[hash & (t->n_buckets - 1)];
    t->buckets[hash & (t->n_buckets - 1)] = e;
    t->n_entries++;
    *first = true;
    return 0;
}

/* Subtract one; *last says it reached 0 (the entry is then freed). */
static void pres_dec(pres_table *t, const char *user, bool *last)
{
    *last = false;
    pres_entry **pp = pres_find(t, user, hash_bytes(user, strlen(user)));
    if (pp == NULL)
        return;
    if (--(*pp)->n == 0) {
        pres_entry *e = *pp;
        *pp = e->next;
        free(e);
        t->n_entries--;
        *last = true;
    }
}

static void pres_free(pres_table *t)
{
    for (uint32_t i = 0; i < t->n_buckets; i++) {
        pres_entry *e = t->buckets[i];
        while (e) {
            pres_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(t->buckets);
    memset(t, 0, sizeof(*t));
}

/* ------------------------------------------------------------------ */
/* Registry. */

static reg_shard *shard_of(cd_hub *h, uint64_t hash)
{
    return &h->shards[(hash >> 58) % N_SHARDS];
}

static cd_channel *reg_find(reg_shard *s, const char *name, size_t len, uint64_t hash)
{
    if (s->n_buckets == 0)
        return NULL;
    for (cd_channel *c = s->buckets[hash & (s->n_buckets - 1)]; c; c = c->reg_next)
        if (c->hash == hash && c->name_len == len && memcmp(c->name, name, len) == 0)
            return c;
    return NULL;
}

static int reg_grow(reg_shard *s)
{
    uint32_t n = s->n_buckets ? s->n_buckets * 2 : 16;
    cd_channel **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return CONDUIT_ENOMEM;
    for (uint32_t i = 0; i < s->n_buckets; i++) {
        cd_channel *c = s->buckets[i];
        while (c) {
            cd_channel *next = c->reg_next;
            c->reg_next = b[c->hash & (n - 1)];
            b[c->hash & (n - 1)] = c;
            c = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->n_buckets = n;
    return 0;
}

static cd_channel *channel_new(cd_hub *h, const char *name, size_t len, uint64_t hash)
{
    size_t n = h->cfg.n_workers;
    size_t size = sizeof(cd_channel) + n * sizeof(cd_sub *) + n * sizeof(uint32_t) + len + 1;
    cd_channel *c = calloc(1, size);
    if (c == NULL)
        return NULL;
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        return NULL;
    }
    c->hash = hash;
    c->local = (cd_sub **)(void *)(c + 1);
    c->worker_subs = (uint32_t *)(void *)(c->local + n);
    c->name = (char *)(c->worker_subs + n);
    memcpy(c->name, name, len);
    c->name[len] = '\0';
    c->name_len = (uint16_t)len;
    c->ns = cd_hub_ns(h, name, len);
    /* A fresh epoch per channel instance: a client holding offsets of an
     * earlier instance learns that they no longer apply. */
    uint64_t e = h->epoch_seed ^ (atomic_fetch_add(&h->epoch_counter, 1) * 0x9e3779b97f4a7c15ull);
    snprintf(c->epoch, sizeof(c->epoch), "%016llx", (unsigned long long)e);
    return c;
}

static void channel_free(cd_channel *c)
{
    pres_free(&c->presence);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Find or create a channel and take a reference. */
static cd_channel *channel_get(cd_hub *h, const char *name, size_t len, bool create)
{
    uint64_t hash = hash_bytes(name, len);
    reg_shard *s = shard_of(h, hash);
    pthread_mutex_lock(&s->lock);
    cd_channel *c = reg_find(s, name, len, hash);
    if (c == NULL && create) {
        if ((s->n_channels >= s->n_buckets && reg_grow(s) != 0) ||
            (c = channel_new(h, name, len, hash)) == NULL) {
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        c->reg_next = s->buckets[hash & (s->n_buckets - 1)];
        s->buckets[hash & (s->n_buckets - 1)] = c;
        s->n_channels++;
        atomic_fetch_add(&h->n_channels, 1);
    }
    if (c)
        c->refs++;
    pthread_mutex_unlock(&s->lock);
    return c;
}

/* The registry shard lock is a leaf: it may be taken while holding a
 * channel lock, never the other way round. */
static void channel_ref(cd_hub *h, cd_channel *c)
{
    reg_shard *s = shard_of(h, c->hash);
    pthread_mutex_lock(&s->lock);
    c->refs++;
    pthread_mutex_unlock(&s->lock);
}

static void channel_unref(cd_hub *h, cd_channel *c)
{
    reg_shard *s = shard_of(h, c->hash);
    pthread_mutex_lock(&s->lock);
    bool gone = --c->refs == 0;
    if (gone) {
        cd_channel **pp = &s->buckets[c->hash & (s->n_buckets - 1)];
        while (*pp != c)
            pp = &(*pp)->reg_next;
        *pp = c->reg_next;
        s->n_channels--;
        atomic_fetch_sub(&h->n_channels, 1);
    }
    pthread_mutex_unlock(&s->lock);
    if (gone)
        channel_free(c);
}

size_t cd_hub_channel_count(const cd_hub *h)
{
    return atomic_load(&((cd_hub *)h)->n_channels);
}

/* ------------------------------------------------------------------ */
/* Deliveries. */

static void msg_unref(hub_msg *msg)
{
    if (atomic_fetch_sub_explicit(&msg->refs, 1, memory_order_acq_rel) != 1)
        return;
    cd_frame_unref(msg->frame);
    if (msg->ch)
        channel_unref(msg->hub, msg->ch);
    free(msg);
}

static void on_deliver(cd_post *p, cd_loop *loop)
{
    CD_UNUSED(loop);
    hub_post *hp = CD_CONTAINER_OF(p, hub_post, post);
    hub_msg *msg = hp->msg;
    cd_hub *h = msg->hub;
    if (msg->ch == NULL) {
        h->cfg.cb.deliver_all(h->cfg.cb.ctx, hp->worker, msg->frame, msg->exclude);
    } else {
        /* Save the next link first: delivering may close that connection,
         * which removes its (only) subscription to this channel. */
        cd_sub *next;
        for (cd_sub *s = msg->ch->local[hp->worker]; s; s = next) {
            next = s->ch_next;
            if (s->m->conn_id == msg->exclude)
                continue;
            if (msg->offset != 0 && msg->offset <= s->from_offset)
                continue; /* published before this subscription existed */
            h->cfg.cb.deliver(h->cfg.cb.ctx, s->m, msg->frame);
        }
    }
    msg_unref(msg);
}

static hub_msg *msg_new(cd_hub *h, cd_channel *ch, cd_frame *f, uint64_t exclude)
{
    hub_msg *msg = malloc(sizeof(*msg) + h->cfg.n_workers * sizeof(hub_post));
    if (msg == NULL)
        return NULL;
    atomic_init(&msg->refs, 1);
    msg->hub = h;
    msg->ch = ch;
    msg->frame = f;
    msg->offset = 0;
    msg->exclude = exclude;
    return msg;
}

/* Push msg to every worker that has subscribers of its channel (or to all
 * workers for broadcast-all).  For a channel the caller holds its lock, so
 * pushes are in the channel's order.  Consumes the caller's reference. */
static void msg_push(cd_hub *h, hub_msg *msg)
{
    for (size_t w = 0; w < h->cfg.n_workers; w++) {
        if (msg->ch && msg->ch->worker_subs[w] == 0)
            continue;
        hub_post *hp = &msg->posts[w];
        hp->msg = msg;
        hp->worker = (unsigned)w;
        hp->post.fn = on_deliver;
        atomic_fetch_add_explicit(&msg->refs, 1, memory_order_relaxed);
        cd_loop_post(h->cfg.loops[w], &hp->post);
    }
    msg_unref(msg);
}

/* Send an event frame to ch's members; caller holds ch->lock.  Takes over
 * the reference to f. */
static void event_push_locked(cd_hub *h, cd_channel *ch, cd_frame *f, uint64_t exclude)
{
    if (f == NULL)
        return;
    hub_msg *msg = msg_new(h, ch, f, exclude);
    if (msg == NULL) {
        cd_frame_unref(f);
        return;
    }
    channel_ref(h, ch);
    msg_push(h, msg);
}

/* ------------------------------------------------------------------ */
/* Subscriptions. */

static cd_sub *member_find(const cd_member *m, const char *name, size_t len)
{
    for (cd_sub *s = m->subs; s; s = s->m_next)
        if (s->ch->name_len == len && memcmp(s->ch->name, name, len) == 0)
            return s;
    return NULL;
}

bool cd_hub_is_subscribed(const cd_member *m, const char *name, size_t len)
{
    return member_find(m, name, len) != NULL;
}

static cd_frame *presence_event(cd_hub *h, cd_channel *ch, const char *user,
                                const char *state)
{
    return h->cfg.cb.presence_frame(h->cfg.cb.ctx, ch->name, ch->name_len, user, state);
}

int cd_hub_subscribe(cd_hub *h, cd_member *m, const char *name, size_t len,
                     bool *was_member)
{
    *was_member = false;
    if (member_find(m, name, len)) {
        *was_member = true;
        return 0;
    }
    if (h->cfg.max_subscriptions_per_conn && m->n_subs >= h->cfg.max_subscriptions_per_conn)
        return CONDUIT_ELIMIT;
    cd_sub *sub = calloc(1, sizeof(*sub));
    if (sub == NULL)
        return CONDUIT_ENOMEM;
    cd_channel *ch = channel_get(h, name, len, true);
    if (ch == NULL) {
        free(sub);
        return CONDUIT_ENOMEM;
    }
    uint32_t cap = ch->ns->max_subscribers ? ch->ns->max_subscribers
                                           : h->cfg.max_subscribers_per_channel;
    pthread_mutex_lock(&ch->lock);
    if (cap && ch->n_subs >= cap) {
        pthread_mutex_unlock(&ch->lock);
        channel_unref(h, ch);
        free(sub);
        return CONDUIT_EDENIED;
    }
    bool first = false;
    if (pres_inc(&ch->presence, m->user, &first) != 0) {
        pthread_mutex_unlock(&ch->lock);
        channel_unref(h, ch);
        free(sub);
        return CONDUIT_ENOMEM;
    }
    sub->ch = ch;
    sub->m = m;
    sub->from_offset = ch->offset;
    sub->ch_next = ch->local[m->worker];
    if (sub->ch_next)
        sub->ch_next->ch_prev = sub;
    ch->local[m->worker] = sub;
    ch->n_subs++;
    ch->worker_subs[m->worker]++;
    if (first && ch->ns->presence && ch->ns->join_leave)
        event_push_locked(h, ch, presence_event(h, ch, m->user, "join"), m->conn_id);
    pthread_mutex_unlock(&ch->lock);

    sub->m_next = m->subs;
    m->subs = sub;
    m->n_subs++;
    return 0;
}

/* Unlink sub from its channel (sending "leave" when it was the user's
 * last connection there) and free it; the member list is the caller's. */
static void sub_remove(cd_hub *h, cd_sub *sub)
{
    cd_channel *ch = sub->ch;
    cd_member *m = sub->m;
    pthread_mutex_lock(&ch->lock);
    if (sub->ch_prev)
        sub->ch_prev->ch_next = sub->ch_next;
    else
        ch->local[m->worker] = sub->ch_next;
    if (sub->ch_next)
        sub->ch_next->ch_prev = sub->ch_prev;
    ch->n_subs--;
    ch->worker_subs[m->worker]--;
    bool last = false;
    pres_dec(&ch->presence, m->user, &last);
    if (last && ch->ns->presence && ch->ns->join_leave && ch->n_subs > 0)
        event_push_locked(h, ch, presence_event(h, ch, m->user, "leave"), m->conn_id);
    pthread_mutex_unlock(&ch->lock);
    channel_unref(h, ch);
    free(sub);
}

int cd_hub_unsubscribe(cd_hub *h, cd_member *m, const char *name, size_t len)
{
    for (cd_sub **pp = &m->subs; *pp; pp = &(*pp)->m_next) {
        cd_sub *s = *pp;
        if (s->ch->name_len == len && memcmp(s->ch->name, name, len) == 0) {
            *pp = s->m_next;
            m->n_subs--;
            sub_remove(h, s);
            return 0;
        }
    }
    return CONDUIT_ENOTFOUND;
}

/* ------------------------------------------------------------------ */
/* Users: online / offline. */

static user_shard *user_shard_of(cd_hub *h, const char *user)
{
    return &h->users[hash_bytes(user, strlen(user)) % N_SHARDS];
}

static void announce(cd_hub *h, cd_member *m, const char *state)
{
    for (cd_sub *s = m->subs; s; s = s->m_next) {
        cd_channel *ch = s->ch;
        if (!ch->ns->presence)
            continue;
        pthread_mutex_lock(&ch->lock);
        event_push_locked(h, ch, presence_event(h, ch, m->user, state), m->conn_id);
        pthread_mutex_unlock(&ch->lock);
    }
}

void cd_hub_member_online(cd_hub *h, cd_member *m)
{
    if (m->is_counted)
        return;
    user_shard *us = user_shard_of(h, m->user);
    bool first = false;
    /* Deciding and announcing under one lock: a concurrent last close of
     * the same user on another worker cannot slip its "offline" in after
     * our "online" (the user lock is taken before channel locks, never
     * under one). */
    pthread_mutex_lock(&us->lock);
    int rc = pres_inc(&us->users, m->user, &first);
    if (rc == 0) {
        m->is_counted = true;
        if (first)
            announce(h, m, "online");
    }
    pthread_mutex_unlock(&us->lock);
}

void cd_hub_member_gone(cd_hub *h, cd_member *m)
{
    if (m->is_counted) {
        user_shard *us = user_shard_of(h, m->user);
        bool last = false;
        pthread_mutex_lock(&us->lock);
        pres_dec(&us->users, m->user, &last);
        if (last)
            announce(h, m, "offline");
        pthread_mutex_unlock(&us->lock);
        m->is_counted = false;
    }
    while (m->subs) {
        cd_sub *s = m->subs;
        m->subs = s->m_next;
        m->n_subs--;
        sub_remove(h, s);
    }
}

/* ------------------------------------------------------------------ */
/* Publishing. */

int cd_hub_publish(cd_hub *h, const char *name, size_t len,
                   uint64_t exclude_conn, cd_hub_build_fn build, void *ctx,
                   cd_publish_result *res)
{
    memset(res, 0, sizeof(*res));
    cd_channel *ch = channel_get(h, name, len, false);
    if (ch == NULL)
        return 0; /* nobody is subscribed: nothing to deliver */
    hub_msg *msg = msg_new(h, ch, NULL, exclude_conn);
    if (msg == NULL) {
        channel_unref(h, ch);
        return CONDUIT_ENOMEM;
    }
    uint64_t ts = now_ms_realtime();
    pthread_mutex_lock(&ch->lock);
    uint64_t offset = ch->offset + 1;
    cd_frame *f = build(ctx, offset, ch->epoch, ts);
    if (f == NULL) {
        pthread_mutex_unlock(&ch->lock);
        free(msg);
        channel_unref(h, ch);
        return CONDUIT_ENOMEM;
    }
    ch->offset = offset;
    msg->frame = f;
    msg->offset = offset;
    res->offset = offset;
    memcpy(res->epoch, ch->epoch, sizeof(res->epoch));
    res->subscribers = ch->n_subs;
    /* The channel reference taken by channel_get now belongs to msg. */
    msg_push(h, msg);
    pthread_mutex_unlock(&ch->lock);
    return 0;
}

int cd_hub_event(cd_hub *h, const char *name, size_t len, uint64_t exclude_conn,
                 cd_frame *f)
{
    cd_channel *ch = channel_get(h, name, len, false);
    if (ch == NULL) {
        cd_frame_unref(f);
        return 0;
    }
    pthread_mutex_lock(&ch->lock);
    event_push_locked(h, ch, f, exclude_conn);
    pthread_mutex_unlock(&ch->lock);
    channel_unref(h, ch);
    return 0;
}

int cd_hub_broadcast_all(cd_hub *h, uint64_t exclude_conn, cd_frame *f)
{
    hub_msg *msg = msg_new(h, NULL, f, exclude_conn);
    if (msg == NULL) {
        cd_frame_unref(f);
        return CONDUIT_ENOMEM;
    }
    msg_push(h, msg);
    return 0;
}

size_t cd_hub_presence(cd_hub *h, const char *name, size_t len,
                       void (*fn)(void *arg, const char *user, uint32_t n),
                       void *arg)
{
    cd_channel *ch = channel_get(h, name, len, false);
    if (ch == NULL)
        return 0;
    pthread_mutex_lock(&ch->lock);
    size_t n = ch->presence.n_entries;
    for (uint32_t i = 0; i < ch->presence.n_buckets; i++)
        for (pres_entry *e = ch->presence.buckets[i]; e; e = e->next)
            fn(arg, e->user, e->n);
    pthread_mutex_unlock(&ch->lock);
    channel_unref(h, ch);
    return n;
}

const cd_sub *cd_hub_member_first(const cd_member *m) { return m->subs; }
const cd_sub *cd_hub_member_next(const cd_sub *s) { return s->m_next; }

const char *cd_hub_sub_channel(const cd_sub *s, size_t *len)
{
    *len = s->ch->name_len;
    return s->ch->name;
}

/* ------------------------------------------------------------------ */
/* Lifecycle and checks. */

int cd_hub_create(cd_hub **out, const cd_hub_config *cfg)
{
    *out = NULL;
    cd_hub *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return CONDUIT_ENOMEM;
    h->cfg = *cfg;
    h->cfg.loops = NULL;
    h->cfg.loops = calloc(cfg->n_workers ? cfg->n_workers : 1, sizeof(cd_loop *));
    h->ns_names = calloc(cfg->n_ns + 1, sizeof(char *));
    h->ns_options = calloc(cfg->n_ns + 1, sizeof(cd_ns_options));
    if (h->cfg.loops == NULL || h->ns_names == NULL || h->ns_options == NULL)
        goto fail;
    for (size_t i = 0; i < cfg->n_workers; i++)
        h->cfg.loops[i] = cfg->loops ? cfg->loops[i] : NULL;
    for (size_t i = 0; i < cfg->n_ns; i++) {
        if ((h->ns_names[i] = strdup(cfg->ns_names[i])) == NULL)
            goto fail;
        h->ns_options[i] = cfg->ns_options[i];
    }
    h->cfg.ns_names = (const char *const *)h->ns_names;
    h->cfg.ns_options = h->ns_options;
    for (size_t i = 0; i < N_SHARDS; i++) {
        pthread_mutex_init(&h->shards[i].lock, NULL);
        pthread_mutex_init(&h->users[i].lock, NULL);
    }
    if (getrandom(&h->epoch_seed, sizeof(h->epoch_seed), 0) != sizeof(h->epoch_seed))
        h->epoch_seed = now_ms_realtime() * 0x9e3779b97f4a7c15ull;
    *out = h;
    return 0;
fail:
    if (h->ns_names)
        for (size_t i = 0; i < cfg->n_ns; i++)
            free(h->ns_names[i]);
    free(h->ns_names);
    free(h->ns_options);
    free(h->cfg.loops);
    free(h);
    return CONDUIT_ENOMEM;
}

/* The loops exist only once the workers do; the server sets them before
 * any worker runs. */
void cd_hub_set_loop(cd_hub *h, size_t worker, cd_loop *loop)
{
    h->cfg.loops[worker] = loop;
}

void cd_hub_destroy(cd_hub *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < N_SHARDS; i++) {
        reg_shard *s = &h->shards[i];
        for (uint32_t b = 0; b < s->n_buckets; b++) {
            cd_channel *c = s->buckets[b];
            while (c) {
                cd_channel *next = c->reg_next;
                channel_free(c);
                c = next;
            }
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
        pres_free(&h->users[i].users);
        pthread_mutex_destroy(&h->users[i].lock);
    }
    for (size_t i = 0; i < h->cfg.n_ns; i++)
        free(h->ns_names[i]);
    free(h->ns_names);
    free(h->ns_options);
    free(h->cfg.loops);
    free(h);
}

int cd_hub_check(cd_hub *h, cd_member *const *members, size_t n_members)
{
    int problems = 0;
    for (size_t i = 0; i < N_SHARDS; i++) {
        reg_shard *s = &h->shards[i];
        for (uint32_t b = 0; b < s->n_buckets; b++) {
            for (cd_channel *c = s->buckets[b]; c; c = c->reg_next) {
                uint32_t listed = 0, counted = 0, present = 0;
                for (size_t w = 0; w < h->cfg.n_workers; w++) {
                    counted += c->worker_subs[w];
                    for (cd_sub *x = c->local[w]; x; x = x->ch_next) {
                        listed++;
                        if (x->ch != c || x->m->worker != w || member_find(x->m, c->name, c->name_len) != x)
                            problems++;
                    }
                }
                for (uint32_t k = 0; k < c->presence.n_buckets; k++)
                    for (pres_entry *e = c->presence.buckets[k]; e; e = e->next)
                        present += e->n;
                if (listed != c->n_subs || counted != c->n_subs || present != c->n_subs ||
                    c->refs < c->n_subs)
                    problems++;
            }
        }
    }
    for (size_t i = 0; i < n_members; i++) {
        uint32_t n = 0;
        for (cd_sub *x = members[i]->subs; x; x = x->m_next) {
            n++;
            bool found = false;
            for (cd_sub *y = x->ch->local[members[i]->worker]; y; y = y->ch_next)
                found |= y == x;
            if (!found)
                problems++;
        }
        if (n != members[i]->n_subs)
            problems++;
    }
    return -problems;
}
