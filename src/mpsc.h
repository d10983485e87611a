/* mpsc.h - intrusive multi-producer, single-consumer queue (Vyukov).
 *
 * Producers on any thread push with one atomic exchange and never wait;
 * the single consumer (the owning worker) pops.  Nodes are embedded in the
 * messages themselves, so pushing allocates nothing.  This and the loop's
 * wake-up are the only cross-thread paths to a worker. */
#ifndef CD_MPSC_H
#define CD_MPSC_H

#include <stdatomic.h>
#include <stdbool.h>

typedef struct cd_mpsc_node {
    _Atomic(struct cd_mpsc_node *) next;
} cd_mpsc_node;

typedef struct cd_mpsc {
    _Atomic(cd_mpsc_node *) head;    /* producers swap in here */
    cd_mpsc_node *tail;              /* consumer pops from here */
    cd_mpsc_node stub;
} cd_mpsc;

void cd_mpsc_init(cd_mpsc *q);
/* Any thread.  Wake-ups are the caller's business (see cd_loop_post). */
void cd_mpsc_push(cd_mpsc *q, cd_mpsc_node *n);
/* Consumer only.  Returns the oldest node, or NULL when the queue is empty
 * or a producer is between its two steps (the node then appears on a later
 * pop; the producer's wake-up guarantees one). */
cd_mpsc_node *cd_mpsc_pop(cd_mpsc *q);

#endif
