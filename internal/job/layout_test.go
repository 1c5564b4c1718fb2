package job

import (
	"errors"
	"strings"
	"testing"
)

// TestOutputLayoutHasNoCollisions is the regression test for overlapping
// output layouts: each pair used to share an output key.
func TestOutputLayoutHasNoCollisions(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("k", MaxDirectKey+1)
	longPrefix := OutputPrefix(long)
	shortLongLookalike := strings.TrimSuffix(longPrefix, "/"+longMarker) // "_long/<hex>" as an ordinary key
	cases := []struct{ keyA, relA, keyB, relB string }{
		{"a", "b/x", "a/b", "x"},
		{"a", "report.json", "a/report.json", "report.json"},
		{"a", "x%2Fy", "a", "x/y"},
		{long, "report.json", shortLongLookalike, "report.json"},
		{long, "report.json", shortLongLookalike, "%2Freport.json"},
		{long, "report.json", long + "x", "report.json"},
	}
	for _, c := range cases {
		a, errA := OutputKey(c.keyA, c.relA)
		b, errB := OutputKey(c.keyB, c.relB)
		if errA != nil || errB != nil {
			t.Fatalf("OutputKey: %v, %v", errA, errB)
		}
		if a == b {
			t.Errorf("input %.20q file %q and input %.20q file %q share output key %.40q", c.keyA, c.relA, c.keyB, c.relB, a)
		}
		// Each output is found under its own key's prefix only.
		if rel, ok := OutputRel(c.keyA, a); !ok || rel != c.relA {
			t.Errorf("OutputRel(%.20q, %.40q) = %q, %v; want %q", c.keyA, a, rel, ok, c.relA)
		}
		if _, ok := OutputRel(c.keyA, b); ok && c.keyA != c.keyB {
			t.Errorf("output %.40q of input %.20q is taken for one of input %.20q", b, c.keyB, c.keyA)
		}
	}
}

func TestOutputLayoutNamesAndLimits(t *testing.T) {
	t.Parallel()
	k, err := OutputKey("samples/hello.txt", "report.json")
	if err != nil || k != "samples/hello.txt/report.json" {
		t.Fatalf("plain output: %q, %v", k, err)
	}
	k, _ = OutputKey("v.mp4", "thumbs/001.jpg")
	if k != "v.mp4/thumbs%2F001.jpg" {
		t.Fatalf("nested output: %q", k)
	}
	k, _ = OutputKey("k", "a\nb")
	if k != "k/a%0Ab" {
		t.Fatalf("control character: %q", k)
	}
	if _, err := OutputKey(strings.Repeat("k", MaxDirectKey), strings.Repeat("f", 300)); !errors.Is(err, ErrOutputName) {
		t.Fatalf("over 1,024 bytes: %v", err)
	}
	if k, err := OutputKey(strings.Repeat("k", 5000), "report.json"); err != nil || !strings.HasPrefix(k, "_long/") || len(k) > 1024 {
		t.Fatalf("long key: %q, %v", k, err)
	}
	for _, bad := range []string{"", "/etc/passwd"} {
		if _, err := OutputKey("k", bad); !errors.Is(err, ErrOutputName) {
			t.Errorf("OutputKey(k, %q): %v", bad, err)
		}
	}
	for _, obj := range []string{"k/a%2", "k/a%zz", "k/x/y", "k/", "kk/x"} {
		if rel, ok := OutputRel("k", obj); ok {
			t.Errorf("OutputRel(k, %q) = %q, true", obj, rel)
		}
	}
}
