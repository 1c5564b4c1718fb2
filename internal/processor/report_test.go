package processor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func ptr(n int64) *int64 { return &n }

// runReportOn runs the report built-in on input and returns the parsed
// report.json, the raw file and the log.
func runReportOn(t *testing.T, key string, input []byte) (report, []byte, string) {
	t.Helper()
	p, err := New(Config{Name: "report"})
	if err != nil {
		t.Fatal(err)
	}
	env := newEnv(t, key, input)
	var log bytes.Buffer
	if err := p.Run(context.Background(), env, &log); err != nil {
		t.Fatalf("Run: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(env.OutputDir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("report.json is not JSON: %v\n%s", err, raw)
	}
	return r, raw, log.String()
}

func TestReport(t *testing.T) {
	t.Parallel()
	// A text input that crosses the copy buffer with multi-byte runes.
	long := strings.Repeat("héllo wörld – naïve ünïcode\tline\n", copyBufSize/20)
	tests := []struct {
		name   string
		key    string
		input  []byte
		text   bool
		ctype  string // "" means http.DetectContentType of the input
		counts bool
	}{
		{"text", "docs/readme.txt", []byte("hello world\nthe quick  brown fox\n\nlast line no newline"), true, "", true},
		{"long utf-8 text", "a/long.txt", []byte(long), true, "", true},
		{"empty", "empty", nil, true, "", true},
		{"binary", "blob.bin", []byte{0x00, 0x01, 0x02, 0xff, 0xfe, 'a', 'b', 0x00}, false, "", false},
		{"invalid utf-8", "latin1.txt", []byte("caf\xe9 au lait\n"), false, "", false},
		{"truncated rune at the end", "cut.txt", []byte("abc\xe2\x82"), false, "", false},
		{"sniff inconclusive, extension decides", "x.json", []byte{0xff, 0x00, 0x10}, false, "application/json", false},
		{"png", "image", []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), false, "image/png", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now().UTC().Truncate(time.Second)
			got, raw, log := runReportOn(t, tt.key, tt.input)

			sum := sha256.Sum256(tt.input)
			want := report{
				Key:         tt.key,
				Size:        int64(len(tt.input)),
				SHA256:      hex.EncodeToString(sum[:]),
				ContentType: tt.ctype,
				Text:        tt.text,
			}
			if want.ContentType == "" {
				want.ContentType = http.DetectContentType(tt.input)
			}
			if tt.counts {
				s := string(tt.input)
				want.Lines = ptr(int64(strings.Count(s, "\n")))
				want.Words = ptr(int64(len(strings.Fields(s))))
				want.Bytes = ptr(int64(len(tt.input)))
			}
			if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(report{}, "ProcessedAt")); diff != "" {
				t.Errorf("report mismatch (-want +got):\n%s", diff)
			}
			at, err := time.Parse(time.RFC3339, got.ProcessedAt)
			if err != nil || at.Before(start) || at.After(time.Now().Add(time.Second)) {
				t.Errorf("processed_at = %q (%v), want RFC3339 of now", got.ProcessedAt, err)
			}
			if !bytes.HasSuffix(raw, []byte("}\n")) || !bytes.Contains(raw, []byte("\n  \"key\"")) {
				t.Errorf("report.json is not indented with a trailing newline:\n%s", raw)
			}
			if !strings.Contains(log, "report: ") {
				t.Errorf("log says nothing about the report: %q", log)
			}
		})
	}
}

func TestReportCountsOmittedForBinary(t *testing.T) {
	t.Parallel()
	_, raw, _ := runReportOn(t, "b", []byte{0, 1, 2})
	for _, field := range []string{`"lines"`, `"words"`, `"bytes"`} {
		if bytes.Contains(raw, []byte(field)) {
			t.Errorf("binary report has %s:\n%s", field, raw)
		}
	}
}

func TestTextStatsChunking(t *testing.T) {
	t.Parallel()
	// Feeding a stream one byte at a time must decide exactly as in one go.
	inputs := []string{"a€b\n", "\xf0\x9f\x98\x80 ok", "ab\xe2\x82", "\xe2\x82\x28", "x\xef\xbf\xbd y", "tab\tvt\vff\f\r\n"}
	for _, in := range inputs {
		whole, bytewise := newTextStats(), newTextStats()
		whole.Write([]byte(in))
		whole.finish()
		for i := range len(in) {
			bytewise.Write([]byte{in[i]})
		}
		bytewise.finish()
		opt := cmp.AllowUnexported(textStats{})
		if diff := cmp.Diff(whole, bytewise, opt, cmpopts.IgnoreFields(textStats{}, "pending")); diff != "" {
			t.Errorf("%q: chunked stats differ (-whole +bytewise):\n%s", in, diff)
		}
	}
}

func TestBuiltinCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, name := range []string{"report", "zstd"} {
		p, _ := New(Config{Name: name})
		env := newEnv(t, "k", []byte("data"))
		err := p.Run(ctx, env, nil)
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
			t.Errorf("%s: Run on a cancelled context = %v, want context.Canceled", name, err)
		}
	}
}

func TestBuiltinTimeout(t *testing.T) {
	t.Parallel()
	p, _ := New(Config{Name: "report", Timeout: time.Nanosecond})
	env := newEnv(t, "k", bytes.Repeat([]byte("x"), 3*copyBufSize))
	err := p.Run(context.Background(), env, nil)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "1ns") {
		t.Fatalf("Run = %v, want ErrTimeout naming the timeout", err)
	}
}

func TestNoop(t *testing.T) {
	t.Parallel()
	p, err := New(Config{Name: "noop"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background(), Env{}, nil); err != nil {
		t.Fatalf("noop Run = %v", err)
	}
}
