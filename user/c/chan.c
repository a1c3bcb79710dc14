/*
 * c-chan: channels from C through libcopra.a: a message with bytes and a moved event
 * handle, a receive buffer too small (EMSGSIZE leaves the message queued), a child
 * (/bin/c-chan-echo) started with EXEC_HANDLES holding one endpoint that answers a
 * CHANNEL_CALL, and EPIPE once the peer is gone. Prints "c-chan: N/N checks passed" and exits 0 when
 * every check held.
 */
#include "copra/copra.h"

static int checks, passed;

static void check(int ok, const char *what) {
    checks++;
    if (ok) {
        passed++;
    } else {
        copra_print("c-chan: FAILED: ");
        copra_print(what);
        copra_print("\n");
    }
}

static void put_count(int n) {
    char digits[12];
    int i = sizeof digits - 1;
    digits[i] = 0;
    do {
        digits[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n && i > 0);
    copra_print(&digits[i]);
}

int main(void) {
    uint32_t a = 0, b = 0;
    check(copra_channel_create(&a, &b) == 0 && a != b, "CHANNEL_CREATE gives two endpoints");

    int64_t ev = copra_event_create(0);
    check(ev >= 0, "EVENT_CREATE");
    uint64_t one = 5;
    check(copra_write((uint32_t)ev, &one, 8) == 8, "the event's counter set to 5");

    static const char text[] = "hello through a channel";
    uint32_t moved[1] = {(uint32_t)ev};
    struct copra_channel_message out = {
        .data = (uint64_t)(uintptr_t)text, .handles = (uint64_t)(uintptr_t)moved,
        .data_len = sizeof text, .handle_count = 1};
    check(copra_send(a, &out, 0) == 0, "SEND of bytes and one handle");
    check(copra_close((uint32_t)ev) == COPRA_ERRNO_ENOTFOUND, "the sent handle left the sender");

    char small[4];
    uint32_t ids[2] = {0, 0};
    struct copra_channel_message in = {
        .data = (uint64_t)(uintptr_t)small, .handles = (uint64_t)(uintptr_t)ids,
        .data_len = sizeof small, .handle_count = 2};
    check(copra_recv(b, &in, 0) == COPRA_ERRNO_EMSGSIZE && in.data_len == sizeof text &&
              in.handle_count == 1,
          "EMSGSIZE says the message's sizes");

    char buf[64];
    in.data = (uint64_t)(uintptr_t)buf;
    in.data_len = sizeof buf;
    in.handle_count = 2;
    int64_t got = copra_recv(b, &in, 0);
    check(got == (int64_t)sizeof text && memcmp(buf, text, sizeof text) == 0,
          "RECV takes the queued message whole");
    uint64_t counter = 0;
    check(in.handle_count == 1 && copra_read(ids[0], &counter, 8) == 8 && counter == 5,
          "the moved event arrives with its counter");
    copra_close(ids[0]);

    /* A child holding endpoint b (c-chan-echo, user/c/chan-echo.c: it finds its
     * endpoint at id 1) answers one CHANNEL_CALL. */
    uint32_t give[1] = {b};
    int64_t task = copra_exec_handles("/bin/c-chan-echo", "/", give, 1);
    check(task > 0, "EXEC_HANDLES moves the endpoint into a child");
    static const char ping[] = "ping";
    struct copra_channel_message req = {.data = (uint64_t)(uintptr_t)ping, .data_len = sizeof ping};
    char answer[16];
    struct copra_channel_message reply = {.data = (uint64_t)(uintptr_t)answer,
                                          .data_len = sizeof answer};
    got = copra_channel_call(a, &req, &reply);
    check(got == 5 && memcmp(answer, "pong", 5) == 0, "CHANNEL_CALL gets the child's answer");
    check(copra_wait((uint64_t)task) == 0, "the child exits with 0");
    struct copra_channel_message none = {.data = (uint64_t)(uintptr_t)buf, .data_len = sizeof buf};
    check(copra_recv(a, &none, 0) == COPRA_ERRNO_EPIPE, "EPIPE once the peer is gone");
    copra_close(a);

    copra_print("c-chan: ");
    put_count(passed);
    copra_print("/");
    put_count(checks);
    copra_print(" checks passed\n");
    return passed == checks ? 0 : 1;
}
