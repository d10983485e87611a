/* Unit tests for idmap.c: insert, lookup, delete with backward shift. */
#include "idmap.h"
#include "test.h"

typedef struct item {
    uint64_t id;
} item;

static uint64_t key_of(const void *v) { return ((const item *)v)->id; }

static item items[200000];

TEST(put_get_del)
{
    cd_idmap m;
    cd_idmap_init(&m, key_of);
    CHECK(cd_idmap_get(&m, 1) == NULL);
    cd_idmap_del(&m, 1); /* empty map: harmless */
    for (uint64_t k = 1; k <= 5000; k++) {
        items[k].id = k | (1ull << 48);
        CHECK_EQ(cd_idmap_put(&m, &items[k]), 0);
    }
    CHECK_EQ(m.count, 5000);
    CHECK(m.count * 4 <= m.cap * 3);
    for (uint64_t k = 1; k <= 5000; k++)
        CHECK(cd_idmap_get(&m, k | (1ull << 48)) == &items[k]);
    /* Remove every other key; the rest must stay reachable past the holes. */
    for (uint64_t k = 1; k <= 5000; k += 2)
        cd_idmap_del(&m, k | (1ull << 48));
    CHECK_EQ(m.count, 2500);
    for (uint64_t k = 1; k <= 5000; k++) {
        void *want = (k % 2) ? NULL : &items[k];
        CHECK(cd_idmap_get(&m, k | (1ull << 48)) == want);
    }
    CHECK_EQ(cd_idmap_put(&m, &items[2]), 0); /* present already */
    CHECK_EQ(m.count, 2500);
    cd_idmap_free(&m);
    CHECK_EQ(m.count, 0);
}

TEST(churn)
{
    /* Many inserts and deletes at a steady size must not degrade. */
    cd_idmap m;
    cd_idmap_init(&m, key_of);
    for (uint64_t k = 1; k < 200000; k++) {
        items[k].id = k;
        CHECK_EQ(cd_idmap_put(&m, &items[k]), 0);
        if (k > 100)
            cd_idmap_del(&m, k - 100);
    }
    CHECK_EQ(m.count, 100);
    CHECK(m.cap <= 256);
    for (uint64_t k = 199900; k < 200000; k++)
        CHECK(cd_idmap_get(&m, k) == &items[k]);
    cd_idmap_free(&m);
}

int main(void)
{
    RUN(put_get_del);
    RUN(churn);
    return test_main_end();
}
