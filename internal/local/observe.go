package local

import (
	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobmetrics"
	"github.com/conveyorhq/conveyor/internal/metrics"
	"github.com/conveyorhq/conveyor/internal/notify"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
)

// observers are what watches the pipeline's jobs besides the dashboard:
// the Prometheus metrics (Config.Metrics) through the same observation
// point as the EMF metrics on AWS (jobmetrics.Tracker), and the webhooks
// (Config.Webhooks). Every method returns at once.
type observers struct {
	metrics  *metrics.Metrics
	tracker  *jobmetrics.Tracker
	webhooks *notify.Notifier
	// dispatcher is the workers' dispatcher, counting in metrics: every
	// dispatch goes through it (the orchestrator's, the reconciler's, a
	// retry's).
	dispatcher dispatch.Dispatcher
}

func newObservers(cfg Config) *observers {
	o := &observers{metrics: cfg.Metrics, webhooks: cfg.Webhooks}
	if cfg.Metrics != nil {
		o.tracker = jobmetrics.NewTracker(cfg.Metrics)
		if cfg.Webhooks != nil {
			cfg.Metrics.Webhooks(webhookStats(cfg.Webhooks))
		}
	}
	return o
}

// changed is a record write by the worker or the orchestrator.
func (o *observers) changed(r *job.Record) {
	o.tracker.Changed(r)
	o.webhooks.Changed(r)
}

// reconciled is a reconciler pass's report.
func (o *observers) reconciled(r orchestrator.Report) { o.metrics.Reconciled(r) }

func webhookStats(n *notify.Notifier) func() []metrics.WebhookStats {
	return func() []metrics.WebhookStats {
		var out []metrics.WebhookStats
		for _, s := range n.Stats() {
			out = append(out, metrics.WebhookStats{Index: s.Index, Delivered: s.Delivered, Failed: s.Failed, Dropped: s.Dropped, Retries: s.Retries, Queued: s.Queued})
		}
		return out
	}
}

// Metrics is the pipeline's Prometheus metrics; nil when off.
func (p *Pipeline) Metrics() *metrics.Metrics { return p.cfg.Metrics }
