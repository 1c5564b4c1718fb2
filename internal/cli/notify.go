package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/conveyorhq/conveyor/internal/eventsource"
	"github.com/conveyorhq/conveyor/internal/local"
)

// DefaultNotificationsSubject is the NATS subject read when
// notifications.nats.url is set without a subject.
const DefaultNotificationsSubject = "conveyor.s3events"

// NotificationsFromCluster, as notifications.nats.url, reads the store's
// notifications from the NATS server of cluster.nats (with `up --nats
// embedded`, the one `up` runs).
const NotificationsFromCluster = "cluster"

// externalMode tells `conveyor up` to use the store at s3.endpoint
// instead of starting the embedded server.
func (c FileConfig) externalMode() bool { return c.S3.Endpoint != "" }

// validateNotifications checks the notifications block and s3.endpoint
// for `conveyor up`.
func (c FileConfig) validateNotifications() error {
	n := c.Notifications
	if !c.externalMode() {
		if n.NATS.URL != "" || n.Webhook.Enabled {
			return usageErrorf("notifications.nats and notifications.webhook are for a store of your own: set s3.endpoint to it (the embedded server's events need no configuration)")
		}
		return nil
	}
	u, err := url.Parse(c.S3.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErrorf("s3.endpoint %q is not a URL like https://s3.example.com or http://127.0.0.1:7070", c.S3.Endpoint)
	}
	if u.User != nil {
		return usageErrorf("s3.endpoint must not carry credentials: use s3.access_key_id and s3.secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	if n.NATS.URL == NotificationsFromCluster && c.Cluster.NATS == "" {
		return usageErrorf("notifications.nats.url: cluster reads the store's notifications from the NATS server of cluster.nats, which is not set: set cluster.nats (embedded, or a URL), or name the store's NATS server in notifications.nats.url")
	}
	if n.NATS.URL != "" && n.NATS.URL != NotificationsFromCluster {
		if n.NATS.Creds != "" && (n.NATS.User != "" || n.NATS.Password != "") {
			return usageErrorf("set either notifications.nats.creds or notifications.nats.user and password, not both")
		}
		if (n.NATS.User == "") != (n.NATS.Password == "") {
			return usageErrorf("notifications.nats.user and notifications.nats.password go together: set both or neither")
		}
	}
	if n.Webhook.Enabled {
		if _, err := c.webhookConfig(); err != nil {
			return err
		}
	}
	return nil
}

// webhookConfig maps notifications.webhook; the secret comes from
// CONVEYOR_NOTIFICATIONS_WEBHOOK_SECRET, the file, or the setting.
func (c FileConfig) webhookConfig() (eventsource.WebhookConfig, error) {
	w := c.Notifications.Webhook
	secret := w.Secret
	if w.SecretFile != "" {
		if secret != "" {
			return eventsource.WebhookConfig{}, usageErrorf("set either notifications.webhook.secret or notifications.webhook.secret_file, not both")
		}
		b, err := os.ReadFile(w.SecretFile)
		if err != nil {
			return eventsource.WebhookConfig{}, usageErrorf("notifications.webhook.secret_file: %v", err)
		}
		secret, _, _ = strings.Cut(string(b), "\n")
		secret = strings.TrimSpace(secret)
	}
	wc := eventsource.WebhookConfig{Addr: w.Addr, Path: w.Path, Secret: secret}.WithDefaults()
	if err := wc.Validate(); err != nil {
		return wc, usageErrorf("notifications.webhook: %v (set notifications.webhook.secret_file or CONVEYOR_NOTIFICATIONS_WEBHOOK_SECRET)", err)
	}
	return wc, nil
}

// natsOptions are the nats.go options of notifications.nats.
func (c FileConfig) natsOptions() []nats.Option {
	n := c.Notifications.NATS
	host, _ := os.Hostname()
	opts := []nats.Option{nats.Name("conveyor up (bucket notifications) on " + host)}
	if n.Creds != "" {
		opts = append(opts, nats.UserCredentials(n.Creds))
	}
	if n.User != "" {
		opts = append(opts, nats.UserInfo(n.User, n.Password))
	}
	if n.CAFile != "" {
		opts = append(opts, nats.RootCAs(n.CAFile))
	}
	return opts
}

// upStore maps s3.endpoint and the notifications block onto the
// pipeline's external store and event sources; nil in embedded mode.
// Warnings go to errw.
func (c FileConfig) upStore(ctx context.Context, errw io.Writer) (*local.ExternalStore, local.EventSources, error) {
	var ev local.EventSources
	if !c.externalMode() {
		return nil, ev, nil
	}
	client, err := awsClient(ctx, c)
	if err != nil {
		return nil, ev, err
	}
	ext := &local.ExternalStore{Endpoint: c.S3.Endpoint, Client: client}
	if n := c.Notifications.NATS; n.URL != "" {
		subject := n.Subject
		if subject == "" {
			subject = DefaultNotificationsSubject
		}
		if n.URL == NotificationsFromCluster {
			ev.NATS = &local.NATSEvents{FromCluster: true, Subject: subject}
		} else {
			ev.NATS = &local.NATSEvents{URL: n.URL, Subject: subject, Options: c.natsOptions()}
		}
	}
	if c.Notifications.Webhook.Enabled {
		wc, err := c.webhookConfig()
		if err != nil {
			return nil, ev, err
		}
		if host, _, err := net.SplitHostPort(wc.Addr); err == nil && !isLoopback(host) {
			fmt.Fprintf(errw, "conveyor: warning: the notifications webhook listens on %s, reachable from other machines; it requires the secret, but traffic is plain HTTP (the secret travels in clear): keep it on a private network or behind a TLS proxy\n", wc.Addr)
		}
		ev.Webhook = &wc
	}
	return ext, ev, nil
}

// storeBanner is the part of `conveyor up`'s banner that says how
// clients reach the store.
func storeBanner(c FileConfig, p *local.Pipeline) string {
	if !c.externalMode() {
		return fmt.Sprintf("Point any S3 client at it with:  eval \"$(conveyor env --data-dir %s)\"\n", shellQuote(c.DataDir))
	}
	s := "Your own S3 store; use it with its own credentials (conveyor put/jobs/get with this configuration).\n"
	if u := p.WebhookURL(); u != "" {
		s += fmt.Sprintf("Webhook for its notifications:   %s  (POST, Authorization: Bearer <notifications.webhook secret>)\n", u)
	}
	if n := c.Notifications.NATS; n.URL != "" {
		subject := n.Subject
		if subject == "" {
			subject = DefaultNotificationsSubject
		}
		s += fmt.Sprintf("Notifications from NATS subject: %s\n", subject)
	}
	return s
}
