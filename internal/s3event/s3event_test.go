package s3event

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseFixtures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file    string
		want    []ObjectCreated
		badIdx  []int
		wantErr error
	}{
		{
			file: "put.json",
			want: []ObjectCreated{{
				EventName: "ObjectCreated:Put", EventTime: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC),
				Bucket: "input-bucket", Key: "reports/Q3 summary été+1.pdf", Size: 1024,
				ETag: "d41d8cd98f00b204e9800998ecf8427e", VersionID: "096fKKXTRTtl3on89fVO.nfljtsv6qko", Sequencer: "0055AED6DCD90281E5",
			}},
		},
		{
			file: "multi.json",
			want: []ObjectCreated{
				{EventName: "ObjectCreated:CompleteMultipartUpload", EventTime: time.Date(2026, 11, 26, 12, 0, 1, 0, time.UTC), Bucket: "in", Key: "big/video.mp4", Size: 5368709120, ETag: "9b2cf535f27731c974343645a3985328-640", Sequencer: "01"},
				{EventName: "ObjectCreated:Copy", Bucket: "in", Key: "copies/a/b.txt", Sequencer: "04"},
			},
			badIdx: []int{2, 3}, // eventVersion 1.0, undecodable key; the delete is ignored
		},
		{
			file: "eventbridge.json",
			want: []ObjectCreated{{
				EventName: "ObjectCreated:PutObject", EventTime: time.Date(2026, 11, 26, 12, 0, 2, 0, time.UTC),
				Bucket: "input-bucket", Key: "incoming/a b.csv", Size: 5, ETag: "b1946ac92492d2347c6235b4d2611184",
				VersionID: "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e", Sequencer: "00617F08299329D189",
			}},
		},
		{file: "test-event.json", wantErr: ErrNotObjectCreated},
		{
			// MinIO's webhook body: form-encoded key, slashes included.
			file: "minio-webhook.json",
			want: []ObjectCreated{{
				EventName: "ObjectCreated:Put", EventTime: time.Date(2026, 11, 26, 12, 0, 3, 250e6, time.UTC),
				Bucket: "input", Key: "incoming/a b+c.csv", Size: 12, ETag: "6f5902ac237024bdd0c176cb93063dc4",
				VersionID: "0a3e7c52-9b1d-4c8e-a6f0-2d5b8e1c7f94", Sequencer: "187B1C5A3E2A6B10",
			}},
		},
		{file: "minio-delete.json"}, // valid, nothing to process
		{
			// versitygw's NATS target: the key verbatim, the ETag quoted,
			// no version ID (v1.8.0 sends none, even when versioned).
			file: "versitygw-nats.json",
			want: []ObjectCreated{{
				EventName: "ObjectCreated:Put", EventTime: time.Date(2026, 11, 26, 12, 0, 5, 0, time.UTC),
				Bucket: "input", Key: "dir/a b+c%.txt", Size: 5, ETag: "b1946ac92492d2347c6235b4d2611184",
				Sequencer: "1",
			}},
		},
		{file: "versitygw-test-event.json", wantErr: ErrNotObjectCreated},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			got, bad, err := Parse(fixture(t, tt.file))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
			var idx []int
			for _, b := range bad {
				idx = append(idx, b.Index)
			}
			if diff := cmp.Diff(tt.badIdx, idx); diff != "" {
				t.Errorf("bad records (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	t.Parallel()
	for _, body := range []string{"", "not json", `{"hello":"world"}`, `{"Records":"x"}`} {
		if _, _, err := Parse([]byte(body)); err == nil || errors.Is(err, ErrNotObjectCreated) {
			t.Errorf("Parse(%q) = %v, want a decode error", body, err)
		}
	}
}

// Keys survive the encoding S3 applies in notifications, whatever they hold.
func TestKeyRoundTrip(t *testing.T) {
	t.Parallel()
	keys := []string{"a b.txt", "plus+sign", "100%", "unicodé/ключ/日本.txt", "../../x", "$(reboot)", "`id`", "new\nline", "a/b/c", "?#&="}
	for _, k := range keys {
		rec := NewRecord("us-east-1", ObjectCreated{EventName: "ObjectCreated:Put", Bucket: "input", Key: k, Size: 3, ETag: "abc", Sequencer: "1"})
		body, err := json.Marshal(Notification{Records: []Record{rec}})
		if err != nil {
			t.Fatal(err)
		}
		got, bad, err := Parse(body)
		if err != nil || len(bad) != 0 || len(got) != 1 {
			t.Fatalf("key %q: %v %v %v", k, got, bad, err)
		}
		if got[0].Key != k {
			t.Errorf("key %q came back as %q (encoded %q)", k, got[0].Key, rec.S3.Object.Key)
		}
	}
	if got := EncodeKey("a b/c+d"); got != "a+b/c%2Bd" {
		t.Errorf("EncodeKey = %q, want S3's form encoding a+b/c%%2Bd", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"put.json", "multi.json", "eventbridge.json", "test-event.json", "minio-webhook.json", "versitygw-nats.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		objs, _, err := Parse(body)
		if err != nil && len(objs) > 0 {
			t.Fatal("objects returned with an error")
		}
		for _, o := range objs {
			if o.Bucket == "" || o.Key == "" {
				t.Fatalf("object without bucket or key: %+v", o)
			}
		}
	})
}
