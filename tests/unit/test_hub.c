/* Unit tests for hub.c: the bookkeeping of channels, subscriptions and
 * presence, with no thread running.
 *
 * Two real loops are created (never run); the hub posts its deliveries to
 * them and cd_loop_drain_posts() runs those posts on this thread, so every
 * delivery, presence event and broadcast is observed deterministically
 * through stub callbacks that record what they were given.  After every
 * step cd_hub_check() must find both indexes (member -> channels and
 * channel -> members) consistent. */
#include <signal.h>
#include <unistd.h>

#include "conduit.h"
#include "hub.h"
#include "loop.h"
#include "test.h"

#define MAX_RECS 512
#define MAX_TRACKED 256

enum { R_DELIVER, R_ALL };

typedef struct rec {
    int kind;
    uint64_t conn;            /* R_DELIVER: the member's connection */
    unsigned worker;          /* R_DELIVER: the member's worker; R_ALL: w */
    uint64_t exclude;         /* R_ALL */
    char text[160];
} rec;

typedef struct env {
    cd_loop *loops[2];
    cd_hub *hub;
    rec recs[MAX_RECS];
    size_t n_recs;
    size_t presence_frames;   /* presence_frame calls */
    cd_member *gone_on_delivery; /* deliver() makes this member go away */
    cd_member *tracked[MAX_TRACKED]; /* checked by every cd_hub_check */
    size_t n_tracked;
} env;

static env E;

/* ------------------------------------------------------------------ */
/* Stub callbacks. */

static cd_frame *text_frame(const char *s)
{
    return cd_frame_copy(s, strlen(s));
}

static void frame_text(const cd_frame *f, char *out, size_t cap)
{
    size_t n = f->len < cap - 1 ? f->len : cap - 1;
    memcpy(out, f->data, n);
    out[n] = '\0';
}

static cd_frame *stub_presence_frame(void *ctx, const char *channel, size_t len,
                                     const char *user, const char *state)
{
    env *e = ctx;
    char buf[400];
    snprintf(buf, sizeof(buf), "presence %.*s %s %s", (int)len, channel, user, state);
    e->presence_frames++;
    return text_frame(buf);
}

static void stub_deliver(void *ctx, cd_member *m, cd_frame *f)
{
    env *e = ctx;
    if (e->n_recs < MAX_RECS) {
        rec *r = &e->recs[e->n_recs++];
        r->kind = R_DELIVER;
        r->conn = m->conn_id;
        r->worker = m->worker;
        r->exclude = 0;
        frame_text(f, r->text, sizeof(r->text));
    }
    /* The server may close a connection while delivering to it (slow
     * consumer): the hub must cope with the member vanishing here. */
    if (m == e->gone_on_delivery) {
        e->gone_on_delivery = NULL;
        cd_hub_member_gone(e->hub, m);
    }
}

static void stub_deliver_all(void *ctx, unsigned w, cd_frame *f, uint64_t exclude)
{
    env *e = ctx;
    if (e->n_recs < MAX_RECS) {
        rec *r = &e->recs[e->n_recs++];
        r->kind = R_ALL;
        r->conn = 0;
        r->worker = w;
        r->exclude = exclude;
        frame_text(f, r->text, sizeof(r->text));
    }
}

typedef struct pub_ctx {
    const char *tag;
    int calls;
    uint64_t offset;
    char epoch[17];
    uint64_t ts;
} pub_ctx;

static cd_frame *build_msg(void *ctx, uint64_t offset, const char *epoch, uint64_t ts_ms)
{
    pub_ctx *p = ctx;
    char buf[128];
    p->calls++;
    p->offset = offset;
    snprintf(p->epoch, sizeof(p->epoch), "%s", epoch);
    p->ts = ts_ms;
    snprintf(buf, sizeof(buf), "msg %s #%llu", p->tag, (unsigned long long)offset);
    return text_frame(buf);
}

/* ------------------------------------------------------------------ */
/* Set-up and helpers. */

typedef struct hub_opts {
    uint32_t max_subs_per_conn;
    uint32_t max_subscribers;
    size_t n_ns;
    const char *const *ns_names;
    const cd_ns_options *ns_options;
} hub_opts;

static const cd_ns_options all_on = {.presence = true, .join_leave = true,
                                     .client_publish = true, .typing = true,
                                     .max_subscribers = 0};

static int setup(const hub_opts *o)
{
    memset(&E, 0, sizeof(E));
    E.loops[0] = cd_loop_create(10, NULL);
    E.loops[1] = cd_loop_create(10, NULL);
    if (E.loops[0] == NULL || E.loops[1] == NULL)
        return -1;
    cd_hub_config cfg = {
        .n_workers = 2,
        .loops = E.loops,
        .max_subscriptions_per_conn = o ? o->max_subs_per_conn : 128,
        .max_subscribers_per_channel = o ? o->max_subscribers : 0,
        .defaults = all_on,
        .ns_names = o ? o->ns_names : NULL,
        .ns_options = o ? o->ns_options : NULL,
        .n_ns = o ? o->n_ns : 0,
        .cb = {.ctx = &E, .presence_frame = stub_presence_frame,
               .deliver = stub_deliver, .deliver_all = stub_deliver_all},
    };
    return cd_hub_create(&E.hub, &cfg);
}

static void drain(void)
{
    /* Worker 1's deliveries may cause posts to worker 0 (a member going
     * away inside a delivery sends leave/offline): drain until both are
     * quiet. */
    for (int i = 0; i < 4; i++) {
        cd_loop_drain_posts(E.loops[0]);
        cd_loop_drain_posts(E.loops[1]);
    }
}

static void teardown(void)
{
    drain();
    cd_hub_destroy(E.hub);
    cd_loop_destroy(E.loops[0]);
    cd_loop_destroy(E.loops[1]);
    E.hub = NULL;
}

static void clear(void)
{
    E.n_recs = 0;
}

/* Initialise a member and track it: every cd_hub_check covers it.  The
 * member lives in the test's frame; setup() forgets the previous test's. */
static void track(cd_member *m, uint64_t conn_id, const char *user, unsigned worker)
{
    memset(m, 0, sizeof(*m));
    m->conn_id = conn_id;
    m->user = user;
    m->worker = worker;
    if (E.n_tracked < MAX_TRACKED)
        E.tracked[E.n_tracked++] = m;
}

/* cd_hub_check over every channel and every tracked member. */
static void hub_ok(int line)
{
    int rc = cd_hub_check(E.hub, E.tracked, E.n_tracked);
    if (rc != 0)
        TEST_FAIL_AT(__FILE__, line, "cd_hub_check found %d problem(s)", -rc);
}

/* Deliveries of exactly `text` to connection `conn`. */
static int got(uint64_t conn, const char *text)
{
    int n = 0;
    for (size_t i = 0; i < E.n_recs; i++)
        if (E.recs[i].kind == R_DELIVER && E.recs[i].conn == conn &&
            strcmp(E.recs[i].text, text) == 0)
            n++;
    return n;
}

/* All deliveries to `conn`. */
static int got_any(uint64_t conn)
{
    int n = 0;
    for (size_t i = 0; i < E.n_recs; i++)
        if (E.recs[i].kind == R_DELIVER && E.recs[i].conn == conn)
            n++;
    return n;
}

/* Index of the i-th delivery to conn (its text), or NULL. */
static const char *nth(uint64_t conn, int k)
{
    for (size_t i = 0; i < E.n_recs; i++)
        if (E.recs[i].kind == R_DELIVER && E.recs[i].conn == conn && k-- == 0)
            return E.recs[i].text;
    return NULL;
}

/* Every hub operation below is followed by cd_hub_check. */
static int sub_at(int line, cd_member *m, const char *name, bool *was)
{
    bool dummy;
    int rc = cd_hub_subscribe(E.hub, m, name, strlen(name), was ? was : &dummy);
    hub_ok(line);
    return rc;
}

static int unsub_at(int line, cd_member *m, const char *name)
{
    int rc = cd_hub_unsubscribe(E.hub, m, name, strlen(name));
    hub_ok(line);
    return rc;
}

static int publish_at(int line, const char *name, uint64_t exclude, pub_ctx *p,
                      cd_publish_result *res)
{
    int rc = cd_hub_publish(E.hub, name, strlen(name), exclude, build_msg, p, res);
    hub_ok(line);
    return rc;
}

#define SUB(m, name, was) sub_at(__LINE__, (m), (name), (was))
#define UNSUB(m, name) unsub_at(__LINE__, (m), (name))
#define PUBLISH(name, exclude, p, res) publish_at(__LINE__, (name), (exclude), (p), (res))
#define GONE(m)                                                              \
    do {                                                                     \
        cd_hub_member_gone(E.hub, (m));                                      \
        hub_ok(__LINE__);                                                    \
    } while (0)
#define ONLINE(m)                                                            \
    do {                                                                     \
        cd_hub_member_online(E.hub, (m));                                    \
        hub_ok(__LINE__);                                                    \
    } while (0)
/* Run the deliveries queued on both loops, then check. */
#define DRAIN()                                                              \
    do {                                                                     \
        drain();                                                             \
        hub_ok(__LINE__);                                                    \
    } while (0)
#define HUB_OK() hub_ok(__LINE__)

typedef struct pres_list {
    int n;
    char users[8][32];
    uint32_t conns[8];
} pres_list;

static void pres_cb(void *arg, const char *user, uint32_t n)
{
    pres_list *pl = arg;
    if (pl->n < 8) {
        snprintf(pl->users[pl->n], sizeof(pl->users[0]), "%s", user);
        pl->conns[pl->n] = n;
        pl->n++;
    }
}

static uint32_t pres_conns(const pres_list *pl, const char *user)
{
    for (int i = 0; i < pl->n; i++)
        if (strcmp(pl->users[i], user) == 0)
            return pl->conns[i];
    return 0;
}

/* ------------------------------------------------------------------ */
/* Tests. */

TEST(channel_names)
{
    char longname[300];
    memset(longname, 'a', sizeof(longname));
    CHECK(cd_hub_channel_name_valid("room", 4));
    CHECK(cd_hub_channel_name_valid("a_-:.@,=/+#!$*~Z9", strlen("a_-:.@,=/+#!$*~Z9")));
    CHECK(cd_hub_channel_name_valid(longname, 255));
    CHECK(!cd_hub_channel_name_valid(longname, 256));
    CHECK(!cd_hub_channel_name_valid("", 0));
    CHECK(!cd_hub_channel_name_valid("a b", 3));
    CHECK(!cd_hub_channel_name_valid("a\0b", 3));
    CHECK(!cd_hub_channel_name_valid("caf\xc3\xa9", 5));
    CHECK(!cd_hub_channel_name_valid("a\"b", 3));
    CHECK(!cd_hub_channel_name_valid("a%b", 3));
    CHECK(!cd_hub_channel_name_valid("a?b", 3));
}

TEST(publish_reaches_each_subscriber_once_across_workers)
{
    CHECK_EQ(setup(NULL), 0);
    cd_member a;
    track(&a, 0x0000000000000001ull, "alice", 0);
    cd_member b;
    track(&b, 0x0001000000000001ull, "bob", 1);
    cd_member c;
    track(&c, 0x0000000000000002ull, "carol", 0);
    cd_member d;
    track(&d, 0x0001000000000002ull, "dave", 1); /* another channel */

    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    CHECK_EQ(SUB(&a, "room", NULL), 0);
    CHECK_EQ(SUB(&b, "room", NULL), 0);
    CHECK_EQ(SUB(&c, "room", NULL), 0);
    CHECK_EQ(SUB(&d, "other", NULL), 0);
    HUB_OK();
    CHECK_EQ(cd_hub_channel_count(E.hub), 2);
    CHECK_EQ(a.n_subs, 1);
    CHECK(cd_hub_is_subscribed(&a, "room", 4));
    CHECK(!cd_hub_is_subscribed(&a, "other", 5));
    CHECK(!cd_hub_is_subscribed(&a, "roo", 3));
    DRAIN();
    clear();

    pub_ctx p = {.tag = "one"};
    cd_publish_result res;
    CHECK_EQ(PUBLISH("room", 0, &p, &res), 0);
    CHECK_EQ(p.calls, 1); /* framed once, whatever the number of subscribers */
    CHECK_EQ(res.offset, 1);
    CHECK_EQ(res.subscribers, 3);
    CHECK_EQ(strlen(res.epoch), 16);
    CHECK_STR(res.epoch, p.epoch);
    CHECK(p.ts > 1600000000000ull); /* wall-clock milliseconds */
    CHECK_EQ(E.n_recs, 0);          /* nothing happens before the loops run */
    HUB_OK();
    DRAIN();
    CHECK_EQ(got(a.conn_id, "msg one #1"), 1);
    CHECK_EQ(got(b.conn_id, "msg one #1"), 1);
    CHECK_EQ(got(c.conn_id, "msg one #1"), 1);
    CHECK_EQ(got_any(d.conn_id), 0);
    CHECK_EQ(E.n_recs, 3);
    /* each delivery ran for a member of the worker whose loop ran it */
    for (size_t i = 0; i < E.n_recs; i++)
        CHECK(E.recs[i].worker == (E.recs[i].conn >> 48));
    clear();

    /* exclusion: the publisher's own connection is skipped */
    pub_ctx p2 = {.tag = "two"};
    CHECK_EQ(PUBLISH("room", b.conn_id, &p2, &res), 0);
    CHECK_EQ(res.offset, 2);
    CHECK_EQ(res.subscribers, 3);
    CHECK_STR(res.epoch, p.epoch); /* same channel instance, same epoch */
    DRAIN();
    CHECK_EQ(got(a.conn_id, "msg two #2"), 1);
    CHECK_EQ(got(c.conn_id, "msg two #2"), 1);
    CHECK_EQ(got_any(b.conn_id), 0);
    CHECK_EQ(E.n_recs, 2);
    clear();

    /* a channel nobody is in: offset 0, no delivery, no channel created */
    pub_ctx p3 = {.tag = "none"};
    CHECK_EQ(PUBLISH("empty", 0, &p3, &res), 0);
    CHECK_EQ(res.offset, 0);
    CHECK_EQ(res.subscribers, 0);
    CHECK_EQ(p3.calls, 0);
    CHECK_EQ(cd_hub_channel_count(E.hub), 2);
    DRAIN();
    CHECK_EQ(E.n_recs, 0);

    /* offsets are per channel */
    pub_ctx p4 = {.tag = "other"};
    CHECK_EQ(PUBLISH("other", 0, &p4, &res), 0);
    CHECK_EQ(res.offset, 1);
    CHECK_EQ(res.subscribers, 1);
    DRAIN();
    CHECK_EQ(got(d.conn_id, "msg other #1"), 1);
    CHECK_EQ(E.n_recs, 1);
    HUB_OK();

    GONE(&a);
    GONE(&b);
    GONE(&c);
    GONE(&d);
    HUB_OK();
    DRAIN();
    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    teardown();
}

TEST(message_published_before_subscription_is_not_delivered)
{
    CHECK_EQ(setup(NULL), 0);
    cd_member a;
    track(&a, 0x0000000000000001ull, "alice", 0);
    cd_member b;
    track(&b, 0x0001000000000001ull, "bob", 1);
    cd_member c;
    track(&c, 0x0000000000000002ull, "carol", 0);
    CHECK_EQ(SUB(&a, "room", NULL), 0);
    DRAIN();
    clear();

    pub_ctx p1 = {.tag = "early"};
    cd_publish_result res;
    CHECK_EQ(PUBLISH("room", 0, &p1, &res), 0);
    CHECK_EQ(res.offset, 1);
    CHECK_EQ(res.subscribers, 1);
    /* b and c subscribe while #1 is still in flight: b on the other worker
     * (which had no subscribers, so #1 was not even posted there) and c on
     * the publisher's worker (whose queue holds #1) */
    CHECK_EQ(SUB(&b, "room", NULL), 0);
    CHECK_EQ(SUB(&c, "room", NULL), 0);
    HUB_OK();
    pub_ctx p2 = {.tag = "late"};
    CHECK_EQ(PUBLISH("room", 0, &p2, &res), 0);
    CHECK_EQ(res.offset, 2);
    CHECK_EQ(res.subscribers, 3);
    DRAIN();
    CHECK_EQ(got(a.conn_id, "msg early #1"), 1);
    CHECK_EQ(got(b.conn_id, "msg early #1"), 0);
    CHECK_EQ(got(c.conn_id, "msg early #1"), 0);
    CHECK_EQ(got(a.conn_id, "msg late #2"), 1);
    CHECK_EQ(got(b.conn_id, "msg late #2"), 1);
    CHECK_EQ(got(c.conn_id, "msg late #2"), 1);
    /* a got #1 before #2 (a also got bob's and carol's join events, in
     * between; only the order of the two messages matters here) */
    int i1 = -1, i2 = -1;
    for (int k = 0; k < got_any(a.conn_id); k++) {
        if (strcmp(nth(a.conn_id, k), "msg early #1") == 0)
            i1 = k;
        if (strcmp(nth(a.conn_id, k), "msg late #2") == 0)
            i2 = k;
    }
    CHECK(i1 >= 0 && i2 > i1);

    /* a connection that unsubscribes while a message is in flight does not
     * get it; one that re-subscribes gets only what follows */
    clear();
    pub_ctx p3 = {.tag = "third"};
    CHECK_EQ(PUBLISH("room", 0, &p3, &res), 0);
    CHECK_EQ(UNSUB(&b, "room"), 0);
    CHECK_EQ(SUB(&b, "room", NULL), 0);
    HUB_OK();
    DRAIN();
    CHECK_EQ(got(a.conn_id, "msg third #3"), 1);
    CHECK_EQ(got(c.conn_id, "msg third #3"), 1);
    CHECK_EQ(got(b.conn_id, "msg third #3"), 0);

    GONE(&a);
    GONE(&b);
    GONE(&c);
    HUB_OK();
    DRAIN();
    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    teardown();
}

TEST(subscribe_is_idempotent_and_unsubscribe_not_found)
{
    CHECK_EQ(setup(NULL), 0);
    cd_member a;
    track(&a, 0x0000000000000001ull, "alice", 0);
    bool was = true;
    CHECK_EQ(SUB(&a, "room", &was), 0);
    CHECK(!was);
    CHECK_EQ(SUB(&a, "room", &was), 0);
    CHECK(was);
    CHECK_EQ(a.n_subs, 1);
    HUB_OK();
    CHECK_EQ(cd_hub_channel_count(E.hub), 1);

    pres_list pl = {0};
    CHECK_EQ(cd_hub_presence(E.hub, "room", 4, pres_cb, &pl), 1);
    CHECK_EQ(pres_conns(&pl, "alice"), 1);

    cd_publish_result res;
    pub_ctx p = {.tag = "x"};
    CHECK_EQ(PUBLISH("room", 0, &p, &res), 0);
    CHECK_EQ(res.subscribers, 1);
    DRAIN();
    CHECK_EQ(got(a.conn_id, "msg x #1"), 1); /* once, not twice */

    CHECK_EQ(UNSUB(&a, "nope"), CONDUIT_ENOTFOUND);
    CHECK_EQ(UNSUB(&a, "roo"), CONDUIT_ENOTFOUND);
    CHECK_EQ(a.n_subs, 1);
    HUB_OK();
    CHECK_EQ(UNSUB(&a, "room"), 0);
    CHECK_EQ(UNSUB(&a, "room"), CONDUIT_ENOTFOUND);
    CHECK_EQ(a.n_subs, 0);
    CHECK(a.subs == NULL);
    HUB_OK();
    DRAIN();
    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    pl.n = 0;
    CHECK_EQ(cd_hub_presence(E.hub, "room", 4, pres_cb, &pl), 0);
    CHECK_EQ(pl.n, 0);

    /* iteration over a member's channels */
    CHECK_EQ(SUB(&a, "c1", NULL), 0);
    CHECK_EQ(SUB(&a, "c2", NULL), 0);
    CHECK_EQ(SUB(&a, "c3", NULL), 0);
    int seen = 0, mask = 0;
    for (const cd_sub *s = cd_hub_member_first(&a); s; s = cd_hub_member_next(s)) {
        size_t len;
        const char *name = cd_hub_sub_channel(s, &len);
        CHECK_EQ(len, 2);
        if (len == 2 && name[0] == 'c')
            mask |= 1 << (name[1] - '0');
        seen++;
    }
    CHECK_EQ(seen, 3);
    CHECK_EQ(mask, 0xE);
    CHECK_EQ(cd_hub_channel_count(E.hub), 3);
    GONE(&a);
    HUB_OK();
    CHECK_EQ(a.n_subs, 0);
    DRAIN();
    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    teardown();
}

TEST(channel_lives_while_a_delivery_is_in_flight)
{
    CHECK_EQ(setup(NULL), 0);
    cd_member a;
    track(&a, 0x0000000000000001ull, "alice", 0);
    cd_member b;
    track(&b, 0x0001000000000001ull, "bob", 1);
    CHECK_EQ(SUB(&a, "room", NULL), 0);
    CHECK_EQ(SUB(&b, "room", NULL), 0);
    DRAIN();
    clear();
    cd_publish_result res;
    pub_ctx p = {.tag = "m"};
    CHECK_EQ(PUBLISH("room", 0, &p, &res), 0);
    GONE(&a);
    GONE(&b);
    HUB_OK();
    /* the in-flight message keeps the channel; nobody gets it */
    CHECK_EQ(cd_hub_channel_count(E.hub), 1);
    DRAIN();
    CHECK_EQ(got_any(a.conn_id), 0);
    CHECK_EQ(got_any(b.conn_id), 0);
    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    /* a new instance of the channel starts again at offset 1, with a new epoch */
    char old_epoch[17];
    memcpy(old_epoch, res.epoch, sizeof(old_epoch));
    CHECK_EQ(SUB(&a, "room", NULL), 0);
    pub_ctx p2 = {.tag = "n"};
    CHECK_EQ(PUBLISH("room", 0, &p2, &res), 0);
    CHECK_EQ(res.offset, 1);
    CHECK(strcmp(res.epoch, old_epoch) != 0);
    DRAIN();
    CHECK_EQ(got(a.conn_id, "msg n #1"), 1);
    GONE(&a);
    DRAIN();
    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    teardown();
}

TEST(presence_join_leave_online_offline)
{
    CHECK_EQ(setup(NULL), 0);
    cd_member obs;
    track(&obs, 0x0000000000000001ull, "obs", 0);
    cd_member u1;
    track(&u1, 0x0000000000000002ull, "u", 0);
    cd_member u2;
    track(&u2, 0x0001000000000001ull, "u", 1);

    CHECK_EQ(SUB(&obs, "room", NULL), 0);
    ONLINE(&obs);
    CHECK(obs.is_counted);
    DRAIN();
    CHECK_EQ(E.n_recs, 0); /* obs is alone: its join/online reach nobody */

    /* u's first connection opens in the room (as /ws/room does):
     * join then online, to obs only */
    CHECK_EQ(SUB(&u1, "room", NULL), 0);
    ONLINE(&u1);
    HUB_OK();
    DRAIN();
    CHECK_EQ(got_any(obs.conn_id), 2);
    CHECK_STR(nth(obs.conn_id, 0), "presence room u join");
    CHECK_STR(nth(obs.conn_id, 1), "presence room u online");
    CHECK_EQ(got_any(u1.conn_id), 0);
    clear();

    /* calling online twice counts once */
    ONLINE(&u1);
    DRAIN();
    CHECK_EQ(E.n_recs, 0);

    /* u's second connection on the other worker: not the first in the
     * room, not the first online: nothing */
    CHECK_EQ(SUB(&u2, "room", NULL), 0);
    ONLINE(&u2);
    HUB_OK();
    DRAIN();
    CHECK_EQ(E.n_recs, 0);

    pres_list pl = {0};
    CHECK_EQ(cd_hub_presence(E.hub, "room", 4, pres_cb, &pl), 2);
    CHECK_EQ(pres_conns(&pl, "u"), 2);
    CHECK_EQ(pres_conns(&pl, "obs"), 1);

    /* the first connection goes: u is still online and in the room */
    GONE(&u1);
    CHECK(!u1.is_counted);
    CHECK_EQ(u1.n_subs, 0);
    HUB_OK();
    DRAIN();
    CHECK_EQ(E.n_recs, 0);
    pl.n = 0;
    CHECK_EQ(cd_hub_presence(E.hub, "room", 4, pres_cb, &pl), 2);
    CHECK_EQ(pres_conns(&pl, "u"), 1);

    /* the last one goes: offline, then leave */
    GONE(&u2);
    HUB_OK();
    DRAIN();
    CHECK_EQ(got_any(obs.conn_id), 2);
    CHECK_STR(nth(obs.conn_id, 0), "presence room u offline");
    CHECK_STR(nth(obs.conn_id, 1), "presence room u leave");
    CHECK_EQ(E.n_recs, 2);
    clear();
    pl.n = 0;
    CHECK_EQ(cd_hub_presence(E.hub, "room", 4, pres_cb, &pl), 1);
    CHECK_EQ(pres_conns(&pl, "u"), 0);

    /* join/leave by subscription alone, a connection already online:
     * join when the user's first connection joins, no online again */
    cd_member u3;
    track(&u3, 0x0000000000000003ull, "u", 0);
    cd_member u4;
    track(&u4, 0x0001000000000002ull, "u", 1);
    ONLINE(&u3); /* no channels: online reaches nobody */
    ONLINE(&u4);
    DRAIN();
    CHECK_EQ(E.n_recs, 0);
    CHECK_EQ(SUB(&u3, "room", NULL), 0);
    CHECK_EQ(SUB(&u4, "room", NULL), 0);
    HUB_OK();
    DRAIN();
    CHECK_EQ(got_any(obs.conn_id), 1);
    CHECK_STR(nth(obs.conn_id, 0), "presence room u join");
    /* u3 gets nothing about its own user joining (it caused it); u4's
     * subscription was not first, so it caused nothing */
    CHECK_EQ(got_any(u3.conn_id), 0);
    CHECK_EQ(got_any(u4.conn_id), 0);
    clear();
    CHECK_EQ(UNSUB(&u3, "room"), 0);
    DRAIN();
    CHECK_EQ(E.n_recs, 0);
    CHECK_EQ(UNSUB(&u4, "room"), 0);
    HUB_OK();
    DRAIN();
    CHECK_EQ(got_any(obs.conn_id), 1);
    CHECK_STR(nth(obs.conn_id, 0), "presence room u leave");
    CHECK_EQ(E.n_recs, 1);
    clear();
    /* u3 and u4 are still online (no channel): going away says offline to
     * nobody */
    GONE(&u3);
    GONE(&u4);
    DRAIN();
    CHECK_EQ(E.n_recs, 0);

    /* the last member leaving an otherwise empty channel sends nothing */
    GONE(&obs);
    HUB_OK();
    DRAIN();
    CHECK_EQ(E.n_recs, 0);
    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    teardown();
}

TEST(online_offline_go_to_every_presence_channel)
{
    const char *names[] = {"quiet", "hidden"};
    cd_ns_options opts[2] = {all_on, all_on};
    opts[0].join_leave = false; /* quiet: online/offline only */
    opts[1].presence = false;   /* hidden: nothing at all */
    hub_opts o = {.max_subs_per_conn = 128, .n_ns = 2, .ns_names = names, .ns_options = opts};
    CHECK_EQ(setup(&o), 0);
    CHECK(cd_hub_ns(E.hub, "quiet:x", 7)->join_leave == false);
    CHECK(cd_hub_ns(E.hub, "quiet:x", 7)->presence == true);
    CHECK(cd_hub_ns(E.hub, "hidden:x", 8)->presence == false);
    CHECK(cd_hub_ns(E.hub, "quietx", 6)->join_leave == true); /* no colon: defaults */
    CHECK(cd_hub_ns(E.hub, "other:x", 7)->join_leave == true);

    cd_member obs;
    track(&obs, 0x0001000000000001ull, "obs", 1);
    cd_member u;
    track(&u, 0x0000000000000001ull, "u", 0);
    CHECK_EQ(SUB(&obs, "a", NULL), 0);
    CHECK_EQ(SUB(&obs, "quiet:b", NULL), 0);
    CHECK_EQ(SUB(&obs, "hidden:c", NULL), 0);
    ONLINE(&obs);
    DRAIN();
    clear();

    CHECK_EQ(SUB(&u, "a", NULL), 0);
    CHECK_EQ(SUB(&u, "quiet:b", NULL), 0);
    CHECK_EQ(SUB(&u, "hidden:c", NULL), 0);
    ONLINE(&u);
    HUB_OK();
    DRAIN();
    CHECK_EQ(got(obs.conn_id, "presence a u join"), 1);
    CHECK_EQ(got(obs.conn_id, "presence a u online"), 1);
    CHECK_EQ(got(obs.conn_id, "presence quiet:b u online"), 1);
    CHECK_EQ(got_any(obs.conn_id), 3);
    clear();

    GONE(&u);
    HUB_OK();
    DRAIN();
    CHECK_EQ(got(obs.conn_id, "presence a u offline"), 1);
    CHECK_EQ(got(obs.conn_id, "presence a u leave"), 1);
    CHECK_EQ(got(obs.conn_id, "presence quiet:b u offline"), 1);
    CHECK_EQ(got_any(obs.conn_id), 3);
    /* offline before leave in channel a */
    int off = -1, lv = -1;
    for (int k = 0; k < 3; k++) {
        if (strcmp(nth(obs.conn_id, k), "presence a u offline") == 0)
            off = k;
        if (strcmp(nth(obs.conn_id, k), "presence a u leave") == 0)
            lv = k;
    }
    CHECK(off >= 0 && lv > off);
    GONE(&obs);
    DRAIN();
    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    teardown();
}

TEST(limits)
{
    const char *names[] = {"small"};
    cd_ns_options opts[1] = {all_on};
    opts[0].max_subscribers = 1;
    hub_opts o = {.max_subs_per_conn = 2, .max_subscribers = 2, .n_ns = 1,
                  .ns_names = names, .ns_options = opts};
    CHECK_EQ(setup(&o), 0);
    cd_member a;
    track(&a, 0x0000000000000001ull, "alice", 0);
    cd_member b;
    track(&b, 0x0001000000000001ull, "bob", 1);
    cd_member c;
    track(&c, 0x0000000000000002ull, "carol", 0);

    /* per connection */
    CHECK_EQ(SUB(&a, "one", NULL), 0);
    CHECK_EQ(SUB(&a, "two", NULL), 0);
    CHECK_EQ(SUB(&a, "three", NULL), CONDUIT_ELIMIT);
    CHECK_EQ(a.n_subs, 2);
    CHECK(!cd_hub_is_subscribed(&a, "three", 5));
    HUB_OK();
    CHECK_EQ(cd_hub_channel_count(E.hub), 2);
    bool was = false;
    CHECK_EQ(SUB(&a, "two", &was), 0); /* already in: fine at the limit */
    CHECK(was);
    CHECK_EQ(UNSUB(&a, "one"), 0);
    CHECK_EQ(SUB(&a, "three", NULL), 0);
    HUB_OK();

    /* per channel (global: 2) */
    CHECK_EQ(SUB(&b, "two", NULL), 0);
    CHECK_EQ(SUB(&c, "two", NULL), CONDUIT_EDENIED);
    CHECK(!cd_hub_is_subscribed(&c, "two", 3));
    CHECK_EQ(c.n_subs, 0);
    HUB_OK();
    DRAIN();
    clear();
    cd_publish_result res;
    pub_ctx p = {.tag = "full"};
    CHECK_EQ(PUBLISH("two", 0, &p, &res), 0);
    CHECK_EQ(res.subscribers, 2);
    DRAIN();
    CHECK_EQ(got_any(c.conn_id), 0);
    CHECK_EQ(UNSUB(&b, "two"), 0);
    CHECK_EQ(SUB(&c, "two", NULL), 0); /* room again */
    HUB_OK();

    /* per namespace (small: 1) */
    CHECK_EQ(SUB(&b, "small:x", NULL), 0);
    CHECK_EQ(SUB(&c, "small:x", NULL), CONDUIT_EDENIED);
    HUB_OK();
    /* a refused subscription leaves no channel behind */
    CHECK_EQ(SUB(&b, "small:y", NULL), 0);
    CHECK_EQ(UNSUB(&b, "small:y"), 0);
    DRAIN();
    size_t before = cd_hub_channel_count(E.hub);
    CHECK_EQ(SUB(&c, "small:x", NULL), CONDUIT_EDENIED);
    CHECK_EQ(cd_hub_channel_count(E.hub), before);

    GONE(&a);
    GONE(&b);
    GONE(&c);
    HUB_OK();
    DRAIN();
    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    teardown();
}

TEST(events_and_broadcast_all)
{
    CHECK_EQ(setup(NULL), 0);
    cd_member a;
    track(&a, 0x0000000000000001ull, "alice", 0);
    cd_member b;
    track(&b, 0x0001000000000001ull, "bob", 1);
    cd_member c;
    track(&c, 0x0001000000000002ull, "carol", 1);
    CHECK_EQ(SUB(&a, "room", NULL), 0);
    CHECK_EQ(SUB(&b, "room", NULL), 0);
    CHECK_EQ(SUB(&c, "elsewhere", NULL), 0);
    DRAIN();
    clear();

    /* typing-like event: to the others in the channel */
    CHECK_EQ(cd_hub_event(E.hub, "room", 4, a.conn_id, text_frame("typing room alice")), 0);
    DRAIN();
    CHECK_EQ(got(b.conn_id, "typing room alice"), 1);
    CHECK_EQ(E.n_recs, 1);
    clear();
    /* to a channel nobody is in: dropped, frame released (ASan checks) */
    CHECK_EQ(cd_hub_event(E.hub, "nobody", 6, 0, text_frame("typing nobody x")), 0);
    DRAIN();
    CHECK_EQ(E.n_recs, 0);
    CHECK_EQ(cd_hub_channel_count(E.hub), 2);

    /* everyone: one deliver_all per worker, with the exclusion passed on */
    CHECK_EQ(cd_hub_broadcast_all(E.hub, b.conn_id, text_frame("everyone")), 0);
    DRAIN();
    CHECK_EQ(E.n_recs, 2);
    int workers = 0;
    for (size_t i = 0; i < E.n_recs; i++) {
        CHECK_EQ(E.recs[i].kind, R_ALL);
        CHECK_EQ(E.recs[i].exclude, b.conn_id);
        CHECK_STR(E.recs[i].text, "everyone");
        workers |= 1 << E.recs[i].worker;
    }
    CHECK_EQ(workers, 3);
    HUB_OK();

    GONE(&a);
    GONE(&b);
    GONE(&c);
    DRAIN();
    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    teardown();
}

TEST(member_gone_during_delivery)
{
    CHECK_EQ(setup(NULL), 0);
    /* three members on worker 0, in list order; the middle one goes away
     * while the message is being delivered to it (a slow consumer closed) */
    cd_member a;
    track(&a, 0x0000000000000001ull, "alice", 0);
    cd_member b;
    track(&b, 0x0000000000000002ull, "bob", 0);
    cd_member c;
    track(&c, 0x0000000000000003ull, "carol", 0);
    cd_member d;
    track(&d, 0x0001000000000001ull, "dave", 1);
    CHECK_EQ(SUB(&a, "room", NULL), 0);
    CHECK_EQ(SUB(&b, "room", NULL), 0);
    CHECK_EQ(SUB(&c, "room", NULL), 0);
    CHECK_EQ(SUB(&d, "room", NULL), 0);
    CHECK_EQ(SUB(&b, "side", NULL), 0);
    cd_member *four[] = {&a, &b, &c, &d};
    for (size_t i = 0; i < 4; i++)
        ONLINE(four[i]);
    DRAIN();
    clear();

    cd_publish_result res;
    pub_ctx p1 = {.tag = "a"};
    pub_ctx p2 = {.tag = "b"};
    CHECK_EQ(PUBLISH("room", 0, &p1, &res), 0);
    CHECK_EQ(PUBLISH("room", 0, &p2, &res), 0);
    E.gone_on_delivery = &b;
    DRAIN();
    CHECK(E.gone_on_delivery == NULL);
    CHECK_EQ(b.n_subs, 0);
    CHECK(!b.is_counted);
    HUB_OK();
    CHECK_EQ(got(a.conn_id, "msg a #1"), 1);
    CHECK_EQ(got(c.conn_id, "msg a #1"), 1);
    CHECK_EQ(got(d.conn_id, "msg a #1"), 1);
    CHECK_EQ(got(b.conn_id, "msg a #1"), 1);
    CHECK_EQ(got(a.conn_id, "msg b #2"), 1);
    CHECK_EQ(got(c.conn_id, "msg b #2"), 1);
    CHECK_EQ(got(d.conn_id, "msg b #2"), 1);
    CHECK_EQ(got(b.conn_id, "msg b #2"), 0); /* gone before #2 */
    /* the others heard bob go */
    CHECK_EQ(got(a.conn_id, "presence room bob offline"), 1);
    CHECK_EQ(got(a.conn_id, "presence room bob leave"), 1);
    CHECK_EQ(got(d.conn_id, "presence room bob leave"), 1);
    CHECK_EQ(got_any(b.conn_id), 1);

    GONE(&a);
    GONE(&c);
    GONE(&d);
    HUB_OK();
    DRAIN();
    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    teardown();
}

TEST(many_members_many_channels)
{
    /* A larger population to exercise the hash tables' growth (registry,
     * presence and user tables). */
    CHECK_EQ(setup(NULL), 0);
    enum { N = 200, C = 40 };
    static cd_member ms[N];
    static char users[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(users[i], sizeof(users[i]), "user%d", i % 70); /* shared users */
        track(&ms[i], ((uint64_t)(i & 1) << 48) | (uint64_t)(i + 1), users[i], (unsigned)(i & 1));
    }
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 5; k++) {
            char name[16];
            snprintf(name, sizeof(name), "ch%d", (i * 7 + k * 13) % C);
            CHECK_EQ(SUB(&ms[i], name, NULL), 0);
        }
        ONLINE(&ms[i]);
    }
    HUB_OK();
    CHECK_EQ(cd_hub_channel_count(E.hub), C);
    DRAIN();
    clear();
    size_t subs_total = 0;
    for (int ch = 0; ch < C; ch++) {
        char name[16];
        snprintf(name, sizeof(name), "ch%d", ch);
        cd_publish_result res;
        pub_ctx p = {.tag = name};
        CHECK_EQ(PUBLISH(name, 0, &p, &res), 0);
        CHECK_EQ(res.offset, 1);
        subs_total += res.subscribers;
        E.n_recs = 0;
        DRAIN();
        /* one delivery per subscription, each of this channel's message */
        CHECK_EQ(E.n_recs, res.subscribers);
        char want[64];
        snprintf(want, sizeof(want), "msg %s #1", name);
        for (size_t k = 0; k < E.n_recs; k++)
            CHECK_STR(E.recs[k].text, want);
    }
    size_t expected = 0;
    for (int i = 0; i < N; i++)
        expected += ms[i].n_subs;
    CHECK_EQ(expected, (size_t)N * 5);
    CHECK_EQ(subs_total, expected);
    for (int i = 0; i < N; i += 2)
        GONE(&ms[i]);
    HUB_OK();
    for (int i = 1; i < N; i += 2)
        GONE(&ms[i]);
    HUB_OK();
    DRAIN();
    CHECK_EQ(cd_hub_channel_count(E.hub), 0);
    teardown();
}

int main(void)
{
    alarm(60);
    RUN(channel_names);
    RUN(publish_reaches_each_subscriber_once_across_workers);
    RUN(message_published_before_subscription_is_not_delivered);
    RUN(subscribe_is_idempotent_and_unsubscribe_not_found);
    RUN(channel_lives_while_a_delivery_is_in_flight);
    RUN(presence_join_leave_online_offline);
    RUN(online_offline_go_to_every_presence_channel);
    RUN(limits);
    RUN(events_and_broadcast_all);
    RUN(member_gone_during_delivery);
    RUN(many_members_many_channels);
    return test_main_end();
}
