/* mpsc.c - Vyukov's intrusive multi-producer, single-consumer queue.
 *
 * The queue is a singly linked list from `tail` (oldest, consumer side) to
 * `head` (newest, producer side), with a stub node so it is never truly
 * empty.  A push is two steps: swap the new node into `head`, then link the
 * previous head to it.  Between the two steps the list is broken at that
 * point, and the consumer sees the nodes behind the break only after the
 * producer finishes; pop then returns NULL rather than wait.
 *
 * Memory ordering: the release store that links prev->next publishes the
 * node (and the message around it) to the consumer's acquire load of the
 * same pointer.  The exchange on `head` is acq_rel so that a producer's link
 * store into `prev` is ordered after the producer that pushed `prev` cleared
 * prev->next. */
#include "mpsc.h"

#include <stddef.h>

void cd_mpsc_init(cd_mpsc *q)
{
    atomic_init(&q->stub.next, NULL);
    atomic_init(&q->head, &q->stub);
    q->tail = &q->stub;
}

void cd_mpsc_push(cd_mpsc *q, cd_mpsc_node *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    cd_mpsc_node *prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

cd_mpsc_node *cd_mpsc_pop(cd_mpsc *q)
{
    cd_mpsc_node *tail = q->tail;
    cd_mpsc_node *next = atomic_load_explicit(&tail->next, memory_order_acquire);

    /* The stub is never returned: step over it to the first real node. */
    if (tail == &q->stub) {
        if (next == NULL)
            return NULL;
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&tail->next, memory_order_acquire);
    }
    if (next != NULL) {
        q->tail = next;
        return tail;
    }

    /* `tail` is the last linked node.  If it is not also the head, a
     * producer has swapped head but not linked yet: report empty for now;
     * that producer's wake-up brings the consumer back. */
    cd_mpsc_node *head = atomic_load_explicit(&q->head, memory_order_acquire);
    if (tail != head)
        return NULL;

    /* `tail` is the only node.  Re-insert the stub behind it so that tail
     * can be handed out while the list stays non-empty. */
    cd_mpsc_push(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    return NULL;
}
