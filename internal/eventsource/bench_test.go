package eventsource

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"
)

// BenchmarkWebhookPOST is one MinIO-shaped notification POSTed over
// loopback HTTP (keep-alive) to the running endpoint, until handed on.
func BenchmarkWebhookPOST(b *testing.B) {
	body := sample(b, "minio-webhook.json")
	done := make(chan struct{}, 1)
	h, err := StartWebhook(WebhookConfig{Addr: "127.0.0.1:0", Secret: testSecret}, func([]byte) { done <- struct{}{} }, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Stop()
	client := &http.Client{}
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, h.URL(), bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testSecret)
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("%v %v", resp, err)
		}
		resp.Body.Close()
		<-done
	}
}

// BenchmarkNATSDelivery is one versitygw-shaped notification published on
// a loopback NATS server until the subscription hands it on.
func BenchmarkNATSDelivery(b *testing.B) {
	body := sample(b, "versitygw-nats.json")
	s := startNATS(b, 0)
	done := make(chan struct{}, 1)
	n, err := SubscribeNATS(s.ClientURL(), "bench", nil, func([]byte) { done <- struct{}{} }, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer n.Stop()
	pub, err := nats.Connect(s.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	b.ReportAllocs()
	for b.Loop() {
		if err := pub.Publish("bench", body); err != nil {
			b.Fatal(err)
		}
		<-done
	}
}
