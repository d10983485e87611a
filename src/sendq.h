/* sendq.h - one connection's queue of outgoing frames.
 *
 * Two lanes of shared cd_frame references: control frames (ping, pong)
 * and data (close frames go with data, after it).  Control frames go out
 * ahead of queued data, but never inside a data frame that is already
 * partly written (RFC 6455 §5.4: control frames may only be injected
 * between frames).  An empty queue is one NULL pointer: its state is
 * allocated when the first frame is queued and freed when the last one is
 * written, so an idle connection holds nothing. */
#ifndef CD_SENDQ_H
#define CD_SENDQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "buf.h"

typedef struct cd_fring {
    cd_frame **items;
    uint32_t head;
    uint32_t count;
    uint32_t cap;
    uint32_t head_off;       /* bytes of items[head] already written */
} cd_fring;

#define CD_SENDQ_INLINE 8

typedef struct cd_sendq_state {
    cd_fring data;
    cd_fring ctl;
    size_t bytes;            /* unwritten bytes in both lanes */
    cd_frame *private_tail;  /* last data frame, if only this queue writes it */
    /* A burst of up to 8 data frames needs no allocation beyond the state;
     * rings spill to the heap past that. */
    cd_frame *data_inline[CD_SENDQ_INLINE];
    cd_frame *ctl_inline[CD_SENDQ_INLINE / 2];
} cd_sendq_state;

typedef struct cd_sendq {
    cd_sendq_state *s;       /* NULL while empty */
} cd_sendq;

/* A worker's cache of queue states.  A publish to N idle subscribers
 * needs N states at once and frees them after the flush; glibc's
 * per-thread cache holds only a few per size, so without this every
 * delivery would take the allocator's slow path.  Every function below
 * takes the pool (NULL: plain malloc/free). */
typedef struct cd_sendq_pool {
    cd_sendq_state *free;    /* linked through data.items */
    size_t n_free;
} cd_sendq_pool;

#define CD_SENDQ_POOL_MAX 4096

/* Free every cached state. */
void cd_sendq_pool_fini(cd_sendq_pool *pool);

static inline bool cd_sendq_is_empty(const cd_sendq *q) { return q->s == NULL; }
static inline size_t cd_sendq_bytes(const cd_sendq *q) { return q->s ? q->s->bytes : 0; }
static inline size_t cd_sendq_count(const cd_sendq *q)
{
    return q->s ? (size_t)q->s->data.count + q->s->ctl.count : 0;
}

/* Append a frame, taking over the caller's reference.  On failure the
 * reference is dropped and CONDUIT_ENOMEM returned. */
int cd_sendq_push(cd_sendq *q, cd_sendq_pool *pool, cd_frame *f, bool is_control);
/* Append one frame, header then payload (copied), to the queue's own
 * private frame at the tail of the data lane when it has room, else to a
 * new private frame with room for more.  Consecutive small messages to one
 * connection (echoes, replies) so cost one allocation and one iovec per
 * batch instead of one per message.  Returns 0 or CONDUIT_ENOMEM. */
int cd_sendq_append(cd_sendq *q, cd_sendq_pool *pool, const uint8_t *hdr,
                    size_t hlen, const uint8_t *payload, size_t plen);
/* The last control frame if none of it is written yet, else NULL (a newer
 * pong may replace an unsent one, RFC 6455 §5.5.3).  The caller replacing
 * it must fix the byte count with cd_sendq_adjust. */
cd_frame **cd_sendq_unsent_ctl_tail(cd_sendq *q);
void cd_sendq_adjust(cd_sendq *q, size_t old_len, size_t new_len);
/* Fill iov with the unwritten bytes in send order; returns the count. */
int cd_sendq_iov(const cd_sendq *q, struct iovec *iov, int max);
/* Mark n bytes written (in the order cd_sendq_iov gave them). */
void cd_sendq_consume(cd_sendq *q, cd_sendq_pool *pool, size_t n);
/* Drop every frame not yet started, keeping a partly written one. */
void cd_sendq_drop_unsent(cd_sendq *q, cd_sendq_pool *pool);
/* Drop everything and free the state. */
void cd_sendq_clear(cd_sendq *q, cd_sendq_pool *pool);

#endif
