/*
 * The kernel's audit switch, for test/linux/landlock-audit.test.ts (what `auditctl -s` / `-e`
 * do, without the audit package): prints `enabled=<0|1|2>` and, with an argument 0 or 1, sets it
 * first. Landlock (ABI 7) reports a denial to the audit subsystem only while it is enabled.
 */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#define PROBE_NAME "audit-ctl"
#include "probe.h"

static int nl;
static uint32_t seq;

static void request(uint16_t type, const void *payload, size_t len) {
    struct {
        struct nlmsghdr h;
        struct audit_status s;
    } m = {0};
    m.h.nlmsg_len = (uint32_t)(NLMSG_HDRLEN + len);
    m.h.nlmsg_type = type;
    m.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    m.h.nlmsg_seq = ++seq;
    if (len) memcpy(&m.s, payload, len);
    if (send(nl, &m, m.h.nlmsg_len, 0) < 0) die("send");
}

/* Read replies to the last request until its ack; fill *st from an AUDIT_GET reply. */
static void replies(struct audit_status *st) {
    for (;;) {
        char buf[8192];
        ssize_t n = recv(nl, buf, sizeof buf, 0);
        if (n < 0) die("recv");
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != seq) continue;
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                if (e->error) {
                    errno = -e->error;
                    die("audit request");
                }
                if (!st) return;
            } else if (h->nlmsg_type == AUDIT_GET && st) {
                memcpy(st, NLMSG_DATA(h), sizeof *st);
                return;
            }
        }
    }
}

int main(int argc, char **argv) {
    nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_AUDIT);
    if (nl < 0) die("socket");
    if (argc > 1) {
        struct audit_status set = {.mask = AUDIT_STATUS_ENABLED, .enabled = argv[1][0] == '1' ? 1 : 0};
        request(AUDIT_SET, &set, sizeof set);
        replies(NULL);
    }
    struct audit_status st = {0};
    request(AUDIT_GET, NULL, 0);
    replies(&st);
    say("enabled=%u\n", st.enabled);
    return close(nl) < 0 ? 1 : 0;
}
