/*
 * portmap.c - the table of mappings LAN hosts asked for (see portmap.h):
 * built whole from the control plane's entries, with two chained indexes,
 * by outside endpoint (NAT44) and by inside endpoint (both families).  The
 * entries come from LAN hosts through the control plane's limits, so the
 * table is small; its hash is keyed only against accidental clustering.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "portmap.h"

#define PM_NIL UINT32_MAX

static uint32_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

static uint32_t ext_hash(uint8_t proto, uint16_t port)
{
    return mix((uint64_t)proto << 16 | port);
}

static uint32_t int_hash(uint8_t family, uint8_t proto, const uint8_t *addr, uint16_t port)
{
    uint64_t a, b;
    memcpy(&a, addr, 8);
    memcpy(&b, addr + 8, 8);
    return mix(a ^ mix(b ^ ((uint64_t)family << 24 | (uint64_t)proto << 16 | port)));
}

void pm_free(struct pm_table *t)
{
    free(t->e);
    free(t->by_ext);
    free(t->by_int);
    free(t->next_ext);
    free(t->next_int);
    memset(t, 0, sizeof *t);
}

/* Why entry 'e' cannot be loaded, or NULL. */
static const char *bad_entry(const struct rt_portmap *e, uint32_t n_ifaces)
{
    if (e->family != 4 && e->family != 6)
        return "family is neither 4 nor 6";
    if (e->proto != 6 && e->proto != 17)
        return "protocol is neither TCP nor UDP";
    if (e->iface < 0 || (uint32_t)e->iface >= n_ifaces)
        return "no such interface";
    if (e->int_port == 0 || (e->family == 4 && e->ext_port == 0))
        return "port 0";
    if (e->n_filters > RT_PM_FILTERS)
        return "too many filters";
    for (uint32_t i = 0; i < e->n_filters; i++)
        if (e->filters[i].plen > (e->family == 4 ? 32 : 128))
            return "filter prefix too long";
    if (e->family == 4) {
        static const uint8_t zero[12];
        if (memcmp(e->int_addr + 4, zero, sizeof zero) != 0)
            return "IPv4 address with bytes past its 4";
    }
    return NULL;
}

static bool alloc_table(struct pm_table *t, uint32_t n)
{
    uint32_t buckets = 1;
    while (buckets < 2 * n)
        buckets <<= 1;
    t->mask = buckets - 1;
    t->e = calloc(n ? n : 1, sizeof *t->e);
    t->by_ext = malloc(buckets * sizeof *t->by_ext);
    t->by_int = malloc(buckets * sizeof *t->by_int);
    t->next_ext = malloc((n ? n : 1) * sizeof *t->next_ext);
    t->next_int = malloc((n ? n : 1) * sizeof *t->next_int);
    if (!t->e || !t->by_ext || !t->by_int || !t->next_ext || !t->next_int)
        return false;
    memset(t->by_ext, 0xff, buckets * sizeof *t->by_ext);
    memset(t->by_int, 0xff, buckets * sizeof *t->by_int);
    return true;
}

/* Indexes entry 'i'; false if its outside or inside endpoint is taken. */
static bool insert(struct pm_table *t, uint32_t i)
{
    const struct rt_portmap *e = &t->e[i];
    union rt_addr a;
    memcpy(a.b, e->int_addr, 16);
    if (pm_by_int(t, e->family, e->proto, &a, htons(e->int_port)))
        return false;
    if (e->family == 4 && pm_by_ext(t, e->proto, htons(e->ext_port)))
        return false;
    uint32_t hi = int_hash(e->family, e->proto, e->int_addr, e->int_port) & t->mask;
    t->next_int[i] = t->by_int[hi];
    t->by_int[hi] = i;
    t->next_ext[i] = PM_NIL;
    if (e->family == 4) {
        uint32_t he = ext_hash(e->proto, e->ext_port) & t->mask;
        t->next_ext[i] = t->by_ext[he];
        t->by_ext[he] = i;
        t->n4++;
    } else {
        t->n6++;
    }
    t->n++;
    return true;
}

bool pm_build(struct pm_table *t, const struct rt_portmap *e, uint32_t n,
              uint32_t n_ifaces, char *err, size_t err_size)
{
    memset(t, 0, sizeof *t);
    if (n > RT_PM_MAX) {
        snprintf(err, err_size, "%u mappings, more than %u", n, RT_PM_MAX);
        return false;
    }
    if (!alloc_table(t, n)) {
        pm_free(t);
        snprintf(err, err_size, "out of memory for %u mappings", n);
        return false;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *why = bad_entry(&e[i], n_ifaces);
        t->e[i] = e[i];
        if (!why && !insert(t, i))
            why = "its outside or inside endpoint has a mapping already";
        if (why) {
            snprintf(err, err_size, "mapping %u: %s", i, why);
            pm_free(t);
            return false;
        }
    }
    return true;
}

const struct rt_portmap *pm_by_ext(const struct pm_table *t, uint8_t proto, rt_be16 port)
{
    if (!t->n4)
        return NULL;
    uint16_t p = ntohs(port);
    for (uint32_t i = t->by_ext[ext_hash(proto, p) & t->mask]; i != PM_NIL; i = t->next_ext[i])
        if (t->e[i].proto == proto && t->e[i].ext_port == p)
            return &t->e[i];
    return NULL;
}

const struct rt_portmap *pm_by_int(const struct pm_table *t, uint8_t family, uint8_t proto,
                                   const union rt_addr *addr, rt_be16 port)
{
    if (!t->n)
        return NULL;
    uint16_t p = ntohs(port);
    uint32_t h = int_hash(family, proto, addr->b, p) & t->mask;
    for (uint32_t i = t->by_int[h]; i != PM_NIL; i = t->next_int[i]) {
        const struct rt_portmap *e = &t->e[i];
        if (e->family == family && e->proto == proto && e->int_port == p &&
            memcmp(e->int_addr, addr->b, 16) == 0)
            return e;
    }
    return NULL;
}

bool pm_admits(const struct rt_portmap *e, const union rt_addr *src, rt_be16 sport)
{
    if (e->n_filters == 0)
        return true;
    for (uint32_t i = 0; i < e->n_filters; i++) {
        const struct rt_pm_filter *f = &e->filters[i];
        if (f->port && f->port != ntohs(sport))
            continue;
        if (prefix_match6(src->b, f->addr, f->plen))
            return true;
    }
    return false;
}
