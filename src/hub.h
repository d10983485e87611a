/* hub.h - channels, subscriptions and presence, shared by every worker.
 *
 * The registry maps a channel name to a cd_channel.  A channel keeps, per
 * worker, the list of that worker's subscriptions (touched only by that
 * worker's thread), how many subscriptions each worker has, and the
 * channel's presence table (user -> subscribed connections).
 *
 * Publishing frames a message once into a reference-counted cd_frame and,
 * under the channel's lock, gives it the next offset and pushes one
 * delivery to every worker that has subscribers (MPSC queue + eventfd).
 * Because offsets and pushes happen under the same lock, every worker's
 * queue holds a channel's messages in offset order, so every subscriber
 * sees the publish order.  Each worker then appends a reference to the
 * frame to each local subscriber's send queue; nothing is copied per
 * subscriber.
 *
 * Locks, and what they protect: a registry shard lock (name -> channel,
 * channel lifetime); a channel lock (subscriber counts, presence table,
 * the offset sequence and the order of pushes); a user-table shard lock
 * (connections per user, and the online/offline announcements, so they
 * cannot cross).  Lock order: user-table shard, then channel, then
 * registry shard (a leaf).  None is held while a frame is delivered to a
 * connection. */
#ifndef CD_HUB_H
#define CD_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "loop.h"

#define CD_CHANNEL_MAX_LEN 255

typedef struct cd_hub cd_hub;
typedef struct cd_channel cd_channel;
typedef struct cd_sub cd_sub;

/* Options of one namespace ("chat" for channels "chat:..."); channels
 * without a configured namespace use the defaults. */
typedef struct cd_ns_options {
    bool presence;            /* member lists and online/offline events */
    bool join_leave;          /* join/leave events to the channel */
    bool client_publish;      /* clients may publish (the server API always may) */
    bool typing;              /* typing events */
    uint32_t max_subscribers; /* 0: the global limit */
    bool anonymous;           /* anonymous connections may subscribe/publish */
    bool publish_requires_subscribe;
} cd_ns_options;

/* One connection's membership.  Embedded in the connection and touched
 * only on its worker's thread. */
typedef struct cd_member {
    uint64_t conn_id;
    const char *user;         /* owned by the connection; stable while a member */
    unsigned worker;
    cd_sub *subs;             /* this connection's subscriptions */
    uint32_t n_subs;
    bool is_counted;          /* counted in the user table (online) */
} cd_member;

/* What the hub needs from the server; every callback runs on the thread
 * named in its comment. */
typedef struct cd_hub_callbacks {
    void *ctx;
    /* Frame a presence event (state "join", "leave", "online", "offline")
     * for `channel`; any thread.  NULL means out of memory (the event is
     * skipped). */
    cd_frame *(*presence_frame)(void *ctx, const char *channel, size_t len,
                                const char *user, const char *state);
    /* Queue `f` for member `m` (takes no reference; copy one if kept);
     * m's worker thread. */
    void (*deliver)(void *ctx, cd_member *m, cd_frame *f);
    /* Queue `f` for every native-protocol connection of worker `w` except
     * `exclude_conn`; w's thread. */
    void (*deliver_all)(void *ctx, unsigned w, cd_frame *f, uint64_t exclude_conn);
} cd_hub_callbacks;

typedef struct cd_hub_config {
    size_t n_workers;
    cd_loop **loops;                    /* one per worker, borrowed */
    uint32_t max_subscriptions_per_conn;
    uint32_t max_subscribers_per_channel; /* 0: unlimited */
    cd_ns_options defaults;
    const char *const *ns_names;        /* configured namespaces */
    const cd_ns_options *ns_options;
    size_t n_ns;
    cd_hub_callbacks cb;
} cd_hub_config;

/* Create the hub; the config's arrays are copied.  Returns 0 or
 * CONDUIT_ENOMEM. */
int cd_hub_create(cd_hub **out, const cd_hub_config *cfg);
/* Give the hub worker w's loop (before any worker runs). */
void cd_hub_set_loop(cd_hub *h, size_t worker, cd_loop *loop);
/* Free the hub; no worker may be running. */
void cd_hub_destroy(cd_hub *h);

/* True when `name` is a valid channel name: 1..255 bytes of
 * [A-Za-z0-9] and _-:.@,=/+#!$*~ (see docs/protocol.md). */
bool cd_hub_channel_name_valid(const char *name, size_t len);
/* The options of the namespace a channel name belongs to. */
const cd_ns_options *cd_hub_ns(const cd_hub *h, const char *name, size_t len);

/* Subscribe m (on its worker's thread).  Returns 0 (also when already
 * subscribed: *was_member is then true), CONDUIT_ELIMIT (the connection's
 * subscription limit: SubscriptionLimitExceeded), CONDUIT_EDENIED (the
 * channel is full: ChannelFull) or CONDUIT_ENOMEM.  Sends "join" to the
 * other members when m's user was not in the channel. */
int cd_hub_subscribe(cd_hub *h, cd_member *m, const char *name, size_t len,
                     bool *was_member);
/* Unsubscribe; CONDUIT_ENOTFOUND when m was not subscribed. */
int cd_hub_unsubscribe(cd_hub *h, cd_member *m, const char *name, size_t len);
/* Is m subscribed to the channel? */
bool cd_hub_is_subscribed(const cd_member *m, const char *name, size_t len);

/* A connection of m->user opened (after its initial subscriptions): count
 * it, and when it is the user's first, send "online" to the members of
 * every presence-enabled channel m is in.  m's thread. */
void cd_hub_member_online(cd_hub *h, cd_member *m);
/* The connection is going away: "offline" when it was the user's last,
 * then every subscription is removed ("leave" where it was the user's
 * last in that channel).  m's thread. */
void cd_hub_member_gone(cd_hub *h, cd_member *m);

/* Frame builder for a publish: called once, under the channel lock, with
 * the message's offset and the channel's epoch. */
typedef cd_frame *(*cd_hub_build_fn)(void *ctx, uint64_t offset,
                                     const char *epoch, uint64_t ts_ms);

typedef struct cd_publish_result {
    uint64_t offset;          /* 0 when nobody was subscribed */
    char epoch[17];
    uint32_t subscribers;     /* at the time of the publish */
} cd_publish_result;

/* Publish to one channel from any thread.  exclude_conn (0: none) does not
 * receive it.  Returns 0, or CONDUIT_ENOMEM (nothing was delivered). */
int cd_hub_publish(cd_hub *h, const char *name, size_t len,
                   uint64_t exclude_conn, cd_hub_build_fn build, void *ctx,
                   cd_publish_result *res);
/* Send an ephemeral event (typing) to a channel's members; any thread.
 * Takes over the caller's reference to f. */
int cd_hub_event(cd_hub *h, const char *name, size_t len, uint64_t exclude_conn,
                 cd_frame *f);
/* Send `f` to every native connection on every worker; any thread.
 * Takes over the caller's reference to f. */
int cd_hub_broadcast_all(cd_hub *h, uint64_t exclude_conn, cd_frame *f);

/* Presence of a channel: calls fn(user, connections) for each member,
 * under the channel lock (fn must not call the hub).  Returns the number
 * of members. */
size_t cd_hub_presence(cd_hub *h, const char *name, size_t len,
                       void (*fn)(void *arg, const char *user, uint32_t n),
                       void *arg);

/* Number of channels with at least one subscriber. */
size_t cd_hub_channel_count(const cd_hub *h);
/* Iterate m's subscribed channel names. */
const cd_sub *cd_hub_member_first(const cd_member *m);
const cd_sub *cd_hub_member_next(const cd_sub *s);
const char *cd_hub_sub_channel(const cd_sub *s, size_t *len);

/* Test support: check every index from both sides; returns 0 or a
 * negative count of problems (all channels, all members of `members`). */
int cd_hub_check(cd_hub *h, cd_member *const *members, size_t n_members);

#endif
