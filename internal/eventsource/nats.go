package eventsource

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// NATS is a running subscription to the subject a store publishes its
// notifications on.
type NATS struct {
	conn     *nats.Conn
	sub      *nats.Subscription
	stopOnce sync.Once
}

// SubscribeNATS connects to the NATS server(s) at url (comma-separated)
// with opts (credentials, TLS, name; see nats.go's options) and calls
// handle with every message's body on subject. The connection reconnects
// for as long as it runs; logf is told when it drops and comes back
// (messages published meanwhile are lost: the reconciler covers them).
// It returns once the subscription is registered with the server, so a
// message published after it returns is delivered.
//
// handle runs on the subscription's goroutine and must not block: queue
// the body and return.
func SubscribeNATS(url, subject string, opts []nats.Option, handle func([]byte), logf func(string, ...any)) (*NATS, error) {
	if strings.TrimSpace(url) == "" {
		return nil, errors.New("no NATS URL: set it to a server like nats://127.0.0.1:4222")
	}
	if subject == "" || strings.ContainsAny(subject, " \t\r\n") {
		return nil, fmt.Errorf("NATS subject %q is not valid: use the store's topic, like conveyor.events", subject)
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	all := append([]nats.Option{
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logf("bucket notifications: NATS connection lost (%v); reconnecting, the reconciler covers uploads announced meanwhile", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			logf("bucket notifications: NATS reconnected to %s", c.ConnectedUrlRedacted())
		}),
	}, opts...)
	conn, err := nats.Connect(url, all...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s for bucket notifications: %w; check the URL and the credentials", redact(url), err)
	}
	sub, err := conn.Subscribe(subject, func(m *nats.Msg) { handle(m.Data) })
	if err == nil {
		// The server knows the subscription once a round trip returns.
		err = conn.Flush()
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("subscribe to NATS subject %s: %w", subject, err)
	}
	// A store can publish faster than the queue takes them: without a
	// limit no message is dropped as a slow consumer's.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		conn.Close()
		return nil, fmt.Errorf("subscribe to NATS subject %s: %w", subject, err)
	}
	return &NATS{conn: conn, sub: sub}, nil
}

// URL is the server the subscription is connected to, credentials removed.
func (n *NATS) URL() string { return n.conn.ConnectedUrlRedacted() }

// Stop ends the subscription and the connection; messages received but
// not yet handled are dropped (the reconciler covers them). Safe to call
// more than once.
func (n *NATS) Stop() {
	n.stopOnce.Do(func() {
		_ = n.sub.Unsubscribe()
		n.conn.Close()
	})
}

// redact removes a user and password from URLs for messages.
func redact(urls string) string {
	var out []string
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if i := strings.Index(u, "://"); i >= 0 && i < at {
				u = u[:i+3] + "***@" + u[at+1:]
			}
		}
		out = append(out, u)
	}
	return strings.Join(out, ",")
}
