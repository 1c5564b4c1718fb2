package local

import (
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/conveyorhq/conveyor/internal/eventsource"
)

// EventSources say where an external store's bucket notifications come
// from; with neither, only the reconciler's sweep finds uploads.
type EventSources struct {
	// NATS subscribes to the subject the store publishes on.
	NATS *NATSEvents
	// Webhook serves an endpoint the store POSTs to.
	Webhook *eventsource.WebhookConfig
}

// NATSEvents is a NATS subject carrying S3 event JSON. Options carry
// credentials and TLS (any nats.go options), so a NATS server that
// Conveyor starts itself can be passed as its URL and options.
type NATSEvents struct {
	URL     string
	Subject string
	Options []nats.Option
	// FromCluster takes URL and Options from the pipeline's own NATS
	// server (Config.NATS: the embedded one or the cluster's), so a store
	// can publish its notifications to the server `up --nats` runs.
	FromCluster bool
}

// eventSources are the running receivers.
type eventSources struct {
	nats    *eventsource.NATS
	webhook *eventsource.Webhook
	// versioned: the input bucket keeps versions (events without a
	// version ID are looked up, versions.go).
	versioned bool
	// foreign remembers the other buckets whose events were seen, so
	// that each is logged once (a store sends every bucket's events).
	foreign sync.Map
}

// startEvents starts the configured receivers; each queues what it
// receives as the embedded server's hook does.
func (p *Pipeline) startEvents(cfg EventSources) error {
	push := func(b []byte) { p.events.push(b) }
	if n := cfg.NATS; n != nil {
		if n.FromCluster {
			info, ok := p.NATS()
			if !ok {
				return fmt.Errorf("bucket notifications from the cluster's NATS server need one: set cluster.nats (embedded or a URL), or name a server in notifications.nats.url")
			}
			c := *n
			c.URL, c.Options = info.URL, info.Options
			n = &c
		}
		sub, err := eventsource.SubscribeNATS(n.URL, n.Subject, n.Options, push, p.logf)
		if err != nil {
			return err
		}
		p.sources.nats = sub
		p.logf("bucket notifications: subscribed to NATS subject %s on %s", n.Subject, sub.URL())
	}
	if w := cfg.Webhook; w != nil {
		h, err := eventsource.StartWebhook(*w, push, p.logf)
		if err != nil {
			return err
		}
		p.sources.webhook = h
		p.logf("bucket notifications: webhook at %s (POST with Authorization: Bearer <secret>)", h.URL())
	}
	if cfg.NATS == nil && cfg.Webhook == nil {
		p.logf("warning: no bucket notifications configured (notifications.nats or notifications.webhook): uploads are found only by the reconciler's sweep of the input bucket")
	}
	return nil
}

// WebhookURL is where the store should POST notifications; "" when no
// webhook runs.
func (p *Pipeline) WebhookURL() string {
	if p.sources.webhook == nil {
		return ""
	}
	return p.sources.webhook.URL()
}

// stopEvents stops the receivers: nothing is queued after it returns.
func (p *Pipeline) stopEvents() {
	if p.sources.nats != nil {
		p.sources.nats.Stop()
	}
	if p.sources.webhook != nil {
		p.sources.webhook.Stop()
	}
}

// noteForeign logs, once per bucket, that a bucket's events are ignored.
func (p *Pipeline) noteForeign(bucket string) {
	if _, seen := p.sources.foreign.LoadOrStore(bucket, true); !seen {
		p.logf("%s", fmt.Sprintf("bucket notifications: ignoring events of bucket %q: only %q (buckets.input) starts jobs; this is said once per bucket", bucket, p.cfg.Buckets.Input))
	}
}
