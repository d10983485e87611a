/* sendq.c - two-lane queue of shared frames (see sendq.h). */
#include "sendq.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "conduit.h"

/* Rings start in the state's inline slots; `inline_items` tells whether
 * items still points there (and must not be freed). */
static int ring_push(cd_fring *r, cd_frame *f, cd_frame **inline_items)
{
    if (r->count == r->cap) {
        uint32_t cap = r->cap * 2;
        cd_frame **items = malloc(sizeof(*items) * cap);
        if (items == NULL)
            return CONDUIT_ENOMEM;
        for (uint32_t i = 0; i < r->count; i++)
            items[i] = r->items[(r->head + i) % r->cap];
        if (r->items != inline_items)
            free(r->items);
        r->items = items;
        r->head = 0;
        r->cap = cap;
    }
    r->items[(r->head + r->count) % r->cap] = f;
    r->count++;
    return 0;
}

static cd_frame *ring_at(const cd_fring *r, uint32_t i)
{
    return r->items[(r->head + i) % r->cap];
}

static void ring_pop(cd_fring *r)
{
    cd_frame_unref(r->items[r->head]);
    r->head = (r->head + 1) % r->cap;
    r->count--;
    r->head_off = 0;
}

static void ring_release(cd_fring *r, cd_frame **inline_items)
{
    if (r->items != inline_items)
        free(r->items);
}

/* Return the state once nothing is queued. */
static void release_if_empty(cd_sendq *q, cd_sendq_pool *pool)
{
    cd_sendq_state *s = q->s;
    if (s && s->data.count == 0 && s->ctl.count == 0) {
        ring_release(&s->data, s->data_inline);
        ring_release(&s->ctl, s->ctl_inline);
        q->s = NULL;
        if (pool && pool->n_free < CD_SENDQ_POOL_MAX) {
            s->data.items = (cd_frame **)(void *)pool->free;
            pool->free = s;
            pool->n_free++;
        } else {
            free(s);
        }
    }
}

void cd_sendq_pool_fini(cd_sendq_pool *pool)
{
    while (pool->free) {
        cd_sendq_state *s = pool->free;
        pool->free = (cd_sendq_state *)(void *)s->data.items;
        free(s);
    }
    pool->n_free = 0;
}

static cd_sendq_state *state(cd_sendq *q, cd_sendq_pool *pool)
{
    if (q->s == NULL) {
        cd_sendq_state *s;
        if (pool && pool->free) {
            s = pool->free;
            pool->free = (cd_sendq_state *)(void *)s->data.items;
            pool->n_free--;
        } else if ((s = malloc(sizeof(*s))) == NULL) {
            return NULL;
        }
        memset(s, 0, offsetof(cd_sendq_state, data_inline));
        s->data.items = s->data_inline;
        s->data.cap = CD_SENDQ_INLINE;
        s->ctl.items = s->ctl_inline;
        s->ctl.cap = CD_SENDQ_INLINE / 2;
        q->s = s;
    }
    return q->s;
}

int cd_sendq_push(cd_sendq *q, cd_sendq_pool *pool, cd_frame *f, bool is_control)
{
    cd_sendq_state *s = state(q, pool);
    if (s == NULL) {
        cd_frame_unref(f);
        return CONDUIT_ENOMEM;
    }
    int rc = is_control ? ring_push(&s->ctl, f, s->ctl_inline)
                        : ring_push(&s->data, f, s->data_inline);
    if (rc != 0) {
        cd_frame_unref(f);
        release_if_empty(q, pool);
        return rc;
    }
    if (!is_control)
        s->private_tail = NULL;
    s->bytes += f->len;
    return 0;
}

/* New private frames leave room for a batch of small messages behind, and
 * stay within glibc's per-thread cache (chunks up to 1032 bytes). */
#define PRIVATE_FRAME_MIN (1024 - sizeof(cd_frame) - 16)

int cd_sendq_append(cd_sendq *q, cd_sendq_pool *pool, const uint8_t *hdr,
                    size_t hlen, const uint8_t *payload, size_t plen)
{
    size_t need = hlen + plen;
    cd_sendq_state *s = q->s;
    cd_frame *t = s ? s->private_tail : NULL;
    if (t != NULL && t->cap - t->len >= need) {
        memcpy(t->data + t->len, hdr, hlen);
        if (plen)
            memcpy(t->data + t->len + hlen, payload, plen);
        t->len += (uint32_t)need;
        s->bytes += need;
        return 0;
    }
    cd_frame *f = cd_frame_alloc(need < PRIVATE_FRAME_MIN / 2 ? PRIVATE_FRAME_MIN : need);
    if (f == NULL)
        return CONDUIT_ENOMEM;
    memcpy(f->data, hdr, hlen);
    if (plen)
        memcpy(f->data + hlen, payload, plen);
    f->len = (uint32_t)need;
    int rc = cd_sendq_push(q, pool, f, false);
    if (rc == 0)
        q->s->private_tail = f;
    return rc;
}

cd_frame **cd_sendq_unsent_ctl_tail(cd_sendq *q)
{
    if (q->s == NULL)
        return NULL;
    cd_fring *r = &q->s->ctl;
    if (r->count == 0 || (r->count == 1 && r->head_off > 0))
        return NULL;
    return &r->items[(r->head + r->count - 1) % r->cap];
}

void cd_sendq_adjust(cd_sendq *q, size_t old_len, size_t new_len)
{
    q->s->bytes = q->s->bytes - old_len + new_len;
}

/* The send order: a partly written data frame first, then every control
 * frame, then the remaining data.  `step` visits items in that order and
 * stops when it returns false. */
typedef bool (*visit_fn)(void *ctx, cd_fring *lane, uint32_t idx);

static void visit(cd_sendq_state *s, visit_fn step, void *ctx)
{
    uint32_t first_data = 0;
    if (s->data.count > 0 && s->data.head_off > 0) {
        if (!step(ctx, &s->data, 0))
            return;
        first_data = 1;
    }
    for (uint32_t i = 0; i < s->ctl.count; i++)
        if (!step(ctx, &s->ctl, i))
            return;
    for (uint32_t i = first_data; i < s->data.count; i++)
        if (!step(ctx, &s->data, i))
            return;
}

typedef struct iov_ctx {
    struct iovec *iov;
    int max;
    int n;
} iov_ctx;

static bool add_iov(void *vctx, cd_fring *lane, uint32_t idx)
{
    iov_ctx *c = vctx;
    if (c->n == c->max)
        return false;
    cd_frame *f = ring_at(lane, idx);
    uint32_t off = idx == 0 ? lane->head_off : 0;
    c->iov[c->n].iov_base = f->data + off;
    c->iov[c->n].iov_len = f->len - off;
    c->n++;
    return true;
}

int cd_sendq_iov(const cd_sendq *q, struct iovec *iov, int max)
{
    iov_ctx c = {iov, max, 0};
    if (q->s)
        visit(q->s, add_iov, &c);
    return c.n;
}

void cd_sendq_consume(cd_sendq *q, cd_sendq_pool *pool, size_t n)
{
    cd_sendq_state *s = q->s;
    if (s == NULL)
        return;
    s->bytes -= n;
    while (n > 0) {
        /* The order of cd_sendq_iov: a partly written data head, then
         * control frames, then data. */
        cd_fring *lane;
        if (s->data.count > 0 && s->data.head_off > 0)
            lane = &s->data;
        else if (s->ctl.count > 0)
            lane = &s->ctl;
        else
            lane = &s->data;
        cd_frame *f = lane->items[lane->head];
        size_t left = f->len - lane->head_off;
        if (n < left) {
            lane->head_off += (uint32_t)n;
            return;
        }
        n -= left;
        if (f == s->private_tail)
            s->private_tail = NULL;
        ring_pop(lane);
    }
    release_if_empty(q, pool);
}

/* Drop whole frames that have not started; a partly written head (in
 * either lane) stays, since cutting it would corrupt the stream. */
static void ring_drop_unsent(cd_fring *r, size_t *bytes)
{
    uint32_t keep = r->count > 0 && r->head_off > 0 ? 1 : 0;
    while (r->count > keep) {
        uint32_t last = (r->head + r->count - 1) % r->cap;
        *bytes -= r->items[last]->len;
        cd_frame_unref(r->items[last]);
        r->count--;
    }
}

void cd_sendq_drop_unsent(cd_sendq *q, cd_sendq_pool *pool)
{
    if (q->s == NULL)
        return;
    /* A kept, partly written private frame may not grow any more: what
     * follows now is not this queue's backlog. */
    q->s->private_tail = NULL;
    ring_drop_unsent(&q->s->ctl, &q->s->bytes);
    ring_drop_unsent(&q->s->data, &q->s->bytes);
    release_if_empty(q, pool);
}

void cd_sendq_clear(cd_sendq *q, cd_sendq_pool *pool)
{
    if (q->s == NULL)
        return;
    while (q->s->ctl.count > 0)
        ring_pop(&q->s->ctl);
    while (q->s->data.count > 0)
        ring_pop(&q->s->data);
    release_if_empty(q, pool);
}
