/* idmap.h - a worker's map from connection id to connection.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), so lookups stay short however many connections come and go.
 * Owned and used by one worker thread. */
#ifndef CD_IDMAP_H
#define CD_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct cd_idmap_slot {
    uint64_t key;                /* 0: empty (connection ids are never 0) */
    void *value;
} cd_idmap_slot;

typedef struct cd_idmap {
    cd_idmap_slot *slots;
    size_t cap;                  /* power of two, or 0 */
    size_t count;
} cd_idmap;

/* Insert or replace; returns 0 or CONDUIT_ENOMEM.  key must not be 0. */
int cd_idmap_put(cd_idmap *m, uint64_t key, void *value);
void *cd_idmap_get(const cd_idmap *m, uint64_t key);
/* Remove key if present. */
void cd_idmap_del(cd_idmap *m, uint64_t key);
void cd_idmap_free(cd_idmap *m);

#endif
