/* sendq.c - two-lane queue of shared frames (see sendq.h). */
#include "sendq.h"

#include <stdlib.h>

#include "conduit.h"

static int ring_push(cd_fring *r, cd_frame *f)
{
    if (r->count == r->cap) {
        uint32_t cap = r->cap ? r->cap * 2 : 4;
        cd_frame **items = malloc(sizeof(*items) * cap);
        if (items == NULL)
            return CONDUIT_ENOMEM;
        for (uint32_t i = 0; i < r->count; i++)
            items[i] = r->items[(r->head + i) % r->cap];
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
    if (r->count == 0) {
        /* Return the ring so an idle connection holds no queue memory. */
        free(r->items);
        r->items = NULL;
        r->head = r->cap = 0;
    }
}

int cd_sendq_push(cd_sendq *q, cd_frame *f, bool is_control)
{
    int rc = ring_push(is_control ? &q->ctl : &q->data, f);
    if (rc != 0) {
        cd_frame_unref(f);
        return rc;
    }
    q->bytes += f->len;
    return 0;
}

cd_frame **cd_sendq_unsent_ctl_tail(cd_sendq *q)
{
    cd_fring *r = &q->ctl;
    if (r->count == 0 || (r->count == 1 && r->head_off > 0))
        return NULL;
    return &r->items[(r->head + r->count - 1) % r->cap];
}

/* The send order: a partly written data frame first, then every control
 * frame, then the remaining data.  `step` visits items in that order and
 * stops when it returns false. */
typedef bool (*visit_fn)(void *ctx, cd_fring *lane, uint32_t idx);

static void visit(const cd_sendq *cq, visit_fn step, void *ctx)
{
    cd_sendq *q = (cd_sendq *)cq;
    uint32_t first_data = 0;
    if (q->data.count > 0 && q->data.head_off > 0) {
        if (!step(ctx, &q->data, 0))
            return;
        first_data = 1;
    }
    for (uint32_t i = 0; i < q->ctl.count; i++)
        if (!step(ctx, &q->ctl, i))
            return;
    for (uint32_t i = first_data; i < q->data.count; i++)
        if (!step(ctx, &q->data, i))
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
    visit(q, add_iov, &c);
    return c.n;
}

void cd_sendq_consume(cd_sendq *q, size_t n)
{
    q->bytes -= n;
    while (n > 0) {
        /* The order of cd_sendq_iov: a partly written data head, then
         * control frames, then data. */
        cd_fring *lane;
        if (q->data.count > 0 && q->data.head_off > 0)
            lane = &q->data;
        else if (q->ctl.count > 0)
            lane = &q->ctl;
        else
            lane = &q->data;
        cd_frame *f = lane->items[lane->head];
        size_t left = f->len - lane->head_off;
        if (n < left) {
            lane->head_off += (uint32_t)n;
            return;
        }
        n -= left;
        ring_pop(lane);
    }
}

void cd_sendq_clear(cd_sendq *q)
{
    while (q->ctl.count > 0)
        ring_pop(&q->ctl);
    while (q->data.count > 0)
        ring_pop(&q->data);
    q->bytes = 0;
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
    if (r->count == 0) {
        free(r->items);
        r->items = NULL;
        r->head = r->cap = r->head_off = 0;
    }
}

void cd_sendq_drop_unsent(cd_sendq *q)
{
    ring_drop_unsent(&q->ctl, &q->bytes);
    ring_drop_unsent(&q->data, &q->bytes);
}
