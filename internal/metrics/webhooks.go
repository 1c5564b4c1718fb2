package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// WebhookStats is what one webhook did so far (see notify.Stats).
type WebhookStats struct {
	Index                               int // the webhook's position in notify.webhooks: its label
	Delivered, Failed, Dropped, Retries int64
	Queued                              int
}

var (
	webhookDeliveries = prometheus.NewDesc(Namespace+"_webhook_deliveries_total",
		"Job state changes sent to a webhook, by result: delivered (2xx), failed (refused, out of attempts, or left at shutdown).", []string{"webhook", "result"}, nil)
	webhookDropped = prometheus.NewDesc(Namespace+"_webhook_dropped_total",
		"Job state changes not queued for a webhook because its queue was full.", []string{"webhook"}, nil)
	webhookRetries = prometheus.NewDesc(Namespace+"_webhook_retries_total",
		"Webhook requests repeated after a connection error, a timeout, a 5xx, 408 or 429.", []string{"webhook"}, nil)
	webhookQueued = prometheus.NewDesc(Namespace+"_webhook_queue_length",
		"Job state changes waiting to be sent to a webhook.", []string{"webhook"}, nil)
)

// Webhooks exposes the webhooks' counts, read from stats at each scrape.
// The label is the webhook's index in the configuration, not its URL
// (which may hold a token). Call it once.
func (m *Metrics) Webhooks(stats func() []WebhookStats) {
	if m == nil {
		return
	}
	m.reg.MustRegister(webhookCollector(stats))
}

type webhookCollector func() []WebhookStats

func (c webhookCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- webhookDeliveries
	ch <- webhookDropped
	ch <- webhookRetries
	ch <- webhookQueued
}

func (c webhookCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c() {
		w := strconv.Itoa(s.Index)
		ch <- prometheus.MustNewConstMetric(webhookDeliveries, prometheus.CounterValue, float64(s.Delivered), w, "delivered")
		ch <- prometheus.MustNewConstMetric(webhookDeliveries, prometheus.CounterValue, float64(s.Failed), w, "failed")
		ch <- prometheus.MustNewConstMetric(webhookDropped, prometheus.CounterValue, float64(s.Dropped), w)
		ch <- prometheus.MustNewConstMetric(webhookRetries, prometheus.CounterValue, float64(s.Retries), w)
		ch <- prometheus.MustNewConstMetric(webhookQueued, prometheus.GaugeValue, float64(s.Queued), w)
	}
}
