/* Unit tests for idmap.c: insert, lookup, delete with backward shift. */
#include "idmap.h"
#include "test.h"

TEST(put_get_del)
{
    cd_idmap m = {0};
    CHECK(cd_idmap_get(&m, 1) == NULL);
    cd_idmap_del(&m, 1); /* empty map: harmless */
    static int values[5000];
    for (uint64_t k = 1; k <= 5000; k++)
        CHECK_EQ(cd_idmap_put(&m, k | (1ull << 48), &values[k - 1]), 0);
    CHECK_EQ(m.count, 5000);
    for (uint64_t k = 1; k <= 5000; k++)
        CHECK(cd_idmap_get(&m, k | (1ull << 48)) == &values[k - 1]);
    /* Remove every other key; the rest must stay reachable past the holes. */
    for (uint64_t k = 1; k <= 5000; k += 2)
        cd_idmap_del(&m, k | (1ull << 48));
    CHECK_EQ(m.count, 2500);
    for (uint64_t k = 1; k <= 5000; k++) {
        void *want = (k % 2) ? NULL : &values[k - 1];
        CHECK(cd_idmap_get(&m, k | (1ull << 48)) == want);
    }
    CHECK_EQ(cd_idmap_put(&m, 2 | (1ull << 48), &values[0]), 0); /* replace */
    CHECK_EQ(m.count, 2500);
    CHECK(cd_idmap_get(&m, 2 | (1ull << 48)) == &values[0]);
    cd_idmap_free(&m);
    CHECK_EQ(m.count, 0);
}

TEST(churn)
{
    /* Many inserts and deletes at a steady size must not degrade. */
    cd_idmap m = {0};
    static int v;
    for (uint64_t k = 1; k <= 200000; k++) {
        CHECK_EQ(cd_idmap_put(&m, k, &v), 0);
        if (k > 100)
            cd_idmap_del(&m, k - 100);
    }
    CHECK_EQ(m.count, 100);
    CHECK(m.cap <= 512);
    cd_idmap_free(&m);
}

int main(void)
{
    RUN(put_get_del);
    RUN(churn);
    return test_main_end();
}
