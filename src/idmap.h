/* idmap.h - a worker's map from connection id to connection.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), so lookups stay short however many connections come and go.
 * A slot is one pointer: the key is read from the value itself through
 * `key_of`, which keeps the map at about 11-21 bytes per connection.
 * Owned and used by one worker thread. */
#ifndef CD_IDMAP_H
#define CD_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct cd_idmap {
    void **slots;                /* NULL: empty */
    size_t cap;                  /* power of two, or 0 */
    size_t count;
    uint64_t (*key_of)(const void *value);
} cd_idmap;

static inline void cd_idmap_init(cd_idmap *m, uint64_t (*key_of)(const void *value))
{
    m->slots = NULL;
    m->cap = m->count = 0;
    m->key_of = key_of;
}

/* Insert (a value whose key is present already is replaced); returns 0 or
 * CONDUIT_ENOMEM.  value must not be NULL. */
int cd_idmap_put(cd_idmap *m, void *value);
void *cd_idmap_get(const cd_idmap *m, uint64_t key);
/* Remove key if present. */
void cd_idmap_del(cd_idmap *m, uint64_t key);
void cd_idmap_free(cd_idmap *m);

#endif
