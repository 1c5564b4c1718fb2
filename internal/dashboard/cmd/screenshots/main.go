// Command screenshots runs a small pipeline in this process, feeds it a
// few jobs (succeeded, failed, running, one with HTML in its key) and
// takes PNG screenshots of the dashboard's main pages in headless
// Chromium, for reviewers:
//
//	go run ./internal/dashboard/cmd/screenshots -out docs/screenshots
//
// It needs Chromium (apt-get install -y chromium, or CHROMIUM=/path).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"image/png"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/chromedp/chromedp"

	"github.com/conveyorhq/conveyor/internal/dashboard"
	"github.com/conveyorhq/conveyor/internal/dashboard/browser"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/local"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
	"github.com/conveyorhq/conveyor/internal/processor"
	"github.com/conveyorhq/conveyor/internal/s3event"
	"github.com/conveyorhq/conveyor/internal/worker"
)

func main() {
	out := flag.String("out", "docs/screenshots", "directory to write the PNGs to")
	width := flag.Int("width", 1280, "browser window width")
	flag.Parse()
	if err := run(*out, *width); err != nil {
		fmt.Fprintln(os.Stderr, "screenshots:", err)
		os.Exit(1)
	}
}

// processorScript fails for keys with "broken" in them, takes its time for
// "slow" ones, and otherwise writes a small report.
const processorScript = `#!/bin/sh
echo "reading $CONVEYOR_INPUT_KEY"
case "$CONVEYOR_INPUT_KEY" in
*broken*) echo "error: line 3: unexpected end of record" >&2; exit 1 ;;
*slow*) for i in 1 2 3 4 5 6 7 8 9 10; do echo "step $i/10"; sleep 3; done ;;
esac
wc "$CONVEYOR_INPUT" > "$CONVEYOR_OUTPUT_DIR/wc.txt"
cp "$CONVEYOR_INPUT" "$CONVEYOR_OUTPUT_DIR/copy"
echo "done"
`

func run(outDir string, width int) error {
	outDir, err := filepath.Abs(outDir) // the S3 server changes directory
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "conveyor-screenshots-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	script := filepath.Join(tmp, "proc.sh")
	if err := os.WriteFile(script, []byte(processorScript), 0o755); err != nil {
		return err
	}
	s3Addr, err := freeAddr()
	if err != nil {
		return err
	}
	ctx := context.Background()
	p, err := local.Start(ctx, local.Config{
		DataDir:      filepath.Join(tmp, "data"),
		S3Addr:       s3Addr,
		Region:       "us-east-1",
		Buckets:      local.Buckets{Input: "input", Output: "output", State: "state"},
		Orchestrator: orchestrator.Config{MaxAttempts: 2},
		Worker:       worker.Config{Backoff: 100 * time.Millisecond, MaxBackoff: time.Second},
		Processor:    processor.Config{Command: []string{script}},
		Workers:      2,
		Reconcile:    time.Minute,
		Dashboard:    &dashboard.Config{Addr: "127.0.0.1:0"},
		Snapshots:    previewSnapshots{},
	})
	if err != nil {
		return err
	}
	defer p.Stop()
	base := strings.TrimSuffix(p.Dashboard.URL(), "/")

	keys := []string{
		"invoices/2026-11/acme-0001.csv", "invoices/2026-11/acme-0002.csv", "invoices/2026-11/globex-0417.csv",
		"photos/IMG_2041.jpg", "photos/IMG_2042.jpg", "reports/q3-summary.pdf", "reports/q4-draft.docx",
		"logs/web-01.log.gz", "logs/web-02.log.gz", "exports/customers.json", "exports/orders.json",
		"invoices/2026-11/broken-0003.csv", `uploads/<img src=x onerror=alert(1)>.txt`, "video/slow-render.mov",
	}
	ids := map[string]string{}
	for i, k := range keys {
		body := bytes.Repeat([]byte(fmt.Sprintf("%s line\n", k)), 200*(i+1))
		o, err := p.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("input"), Key: aws.String(k), Body: bytes.NewReader(body)})
		if err != nil {
			return fmt.Errorf("upload %s: %w", k, err)
		}
		ids[k] = job.ID("input", k, job.Revision(aws.ToString(o.VersionId), s3event.TrimETag(aws.ToString(o.ETag))))
	}
	failed, slow := ids["invoices/2026-11/broken-0003.csv"], ids["video/slow-render.mov"]
	ok := ids["invoices/2026-11/acme-0001.csv"]
	if err := waitFor(ctx, p, 60*time.Second, func(r map[string]*job.Record) bool {
		for k, id := range ids {
			rec := r[id]
			switch {
			case rec == nil:
				return false
			case id == slow:
				if rec.State != job.Running {
					return false
				}
			case id == failed:
				if rec.State != job.Dead {
					return false
				}
			case k != "" && rec.State != job.Succeeded:
				return false
			}
		}
		return true
	}); err != nil {
		return err
	}

	bctx, cancel, err := browser.Start(ctx, filepath.Join(tmp, "chromium"), width, 900)
	if err != nil {
		return err
	}
	defer cancel()
	shots := []struct{ name, url, wait string }{
		{"jobs.png", base + "/", "#chart-finished svg"},
		{"jobs-dead.png", base + "/?state=dead", "#jobs tr"},
		{"job-succeeded.png", base + "/jobs/" + ok, "#log"},
		{"job-dead.png", base + "/jobs/" + failed, "#log"},
		{"job-running.png", base + "/jobs/" + slow, "#log"},
	}
	for _, s := range shots {
		png, err := shot(bctx, s.url, s.wait)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		png = smaller(png)
		path := filepath.Join(outDir, s.name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			return err
		}
		fmt.Printf("wrote %s (%d KiB)\n", path, len(png)>>10)
	}
	return nil
}

// shot loads url, waits for sel and for the live stream, lets the log and
// charts draw, and captures the whole page.
func shot(ctx context.Context, url, sel string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := chromedp.Do(ctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(sel)),
	)
	if err != nil {
		return nil, err
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("live").textContent === "live" && (!document.getElementById("log") || document.getElementById("log").textContent.length > 0)`)); err != nil {
		return nil, err
	}
	// The list refresh and the log's first chunk settle within a moment.
	if err := chromedp.Do(ctx, chromedp.Sleep(700*time.Millisecond)); err != nil {
		return nil, err
	}
	return chromedp.Run(ctx, chromedp.FullScreenshot(100))
}

// waitFor polls the job records until cond holds.
func waitFor(ctx context.Context, p *local.Pipeline, timeout time.Duration, cond func(map[string]*job.Record) bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		recs, err := p.Store.List(ctx)
		if err != nil {
			return err
		}
		m := map[string]*job.Record{}
		for _, r := range recs {
			m[r.ID] = r
		}
		if cond(m) {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("jobs did not reach the states to show within %s", timeout)
}

// smaller re-encodes a PNG with the best compression (Chromium favours
// speed), keeping the original when that does not help.
func smaller(b []byte) []byte {
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return b
	}
	var out bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&out, img); err != nil || out.Len() >= len(b) {
		return b
	}
	return out.Bytes()
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// previewSnapshots fills the snapshot panel with example data, so the
// screenshots show it before the snapshot engine is wired in.
type previewSnapshots struct{}

func (previewSnapshots) List(context.Context) ([]dashboard.SnapshotInfo, error) {
	now := time.Now().Truncate(time.Hour)
	var l []dashboard.SnapshotInfo
	for i := range 4 {
		l = append(l, dashboard.SnapshotInfo{
			ID: fmt.Sprintf("snap-%s", now.Add(-time.Duration(6*i)*time.Hour).UTC().Format("20060102-1504")), CreatedAt: now.Add(-time.Duration(6*i) * time.Hour),
			Size: 734 << 20, Added: int64(12-i) << 20, Note: "scheduled (preview data)",
		})
	}
	return l, nil
}
func (previewSnapshots) Create(context.Context) error { return nil }
func (previewSnapshots) Schedule() string             { return "every 6h" }
func (previewSnapshots) Retention() string            { return "keep 4 hourly, 7 daily, 4 weekly" }
