package processor

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
)

func TestZstdRoundTrip(t *testing.T) {
	t.Parallel()
	random := make([]byte, 3*copyBufSize+17)
	rand.Read(random)
	tests := []struct {
		name  string
		input []byte
	}{
		{"empty", nil},
		{"text", []byte(strings.Repeat("compress me please\n", 10000))},
		{"random, several chunks", random},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := New(Config{Name: "zstd"})
			if err != nil {
				t.Fatal(err)
			}
			env := newEnv(t, "dir/data.bin", tt.input)
			var log bytes.Buffer
			if err := p.Run(context.Background(), env, &log); err != nil {
				t.Fatalf("Run: %v", err)
			}
			f, err := os.Open(filepath.Join(env.OutputDir, "data.bin.zst"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			dec, err := zstd.NewReader(f)
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Close()
			var got bytes.Buffer
			if _, err := got.ReadFrom(dec); err != nil {
				t.Fatalf("decompress: %v", err)
			}
			if !bytes.Equal(got.Bytes(), tt.input) {
				t.Fatalf("round trip changed the data: got %d bytes, want %d", got.Len(), len(tt.input))
			}
			if !strings.Contains(log.String(), "zstd: compressed") {
				t.Errorf("log says nothing: %q", log.String())
			}
		})
	}
}

func TestZstdHostileKeys(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("k", 1024)
	tests := []struct {
		key  string
		want string // expected output file name
	}{
		{"../../x", "x.zst"},
		{"a/b/c.txt", "c.txt.zst"},
		{"", "input.zst"},
		{"/", "input.zst"},
		{".", "input.zst"},
		{"..", "input.zst"},
		{"a/..", "input.zst"},
		{"dir/", "dir.zst"},
		{"$(reboot)", "$(reboot).zst"},
		{"line\nbreak", "line_break.zst"},
		{"bad\xffutf8", "bad_utf8.zst"},
		{long, strings.Repeat("k", maxBaseName) + ".zst"},
		{strings.Repeat("é", 600) + ".txt", strings.Repeat("é", 98) + ".txt.zst"},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.key[:min(len(tt.key), 24)]), func(t *testing.T) {
			t.Parallel()
			p, _ := New(Config{Name: "zstd"})
			env := newEnv(t, tt.key, []byte("payload"))
			if err := p.Run(context.Background(), env, nil); err != nil {
				t.Fatalf("Run(key %q): %v", tt.key, err)
			}
			entries, err := os.ReadDir(env.OutputDir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name() != tt.want {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Fatalf("key %q: OutputDir holds %q, want [%q]", tt.key, names, tt.want)
			}
			// Nothing escaped the output directory.
			parent := filepath.Dir(env.OutputDir)
			if _, err := os.Stat(filepath.Join(parent, "x.zst")); err == nil {
				t.Fatal("a file was written outside OutputDir")
			}
		})
	}
}

func TestSafeBaseName(t *testing.T) {
	t.Parallel()
	keys := []string{"", ".", "..", "/", "//", "../..", "a/b/", "\x00", "\n", "\\..\\x", strings.Repeat("/", 300),
		strings.Repeat("ü", 300), strings.Repeat("a", 250) + "." + strings.Repeat("e", 40), "\xff\xfe"}
	for _, k := range keys {
		got := safeBaseName(k)
		if got == "" || got == "." || got == ".." || strings.ContainsAny(got, "/\x00\n") ||
			len(got) > maxBaseName || !utf8.ValidString(got) {
			t.Errorf("safeBaseName(%q) = %q: not a safe file name", k, got)
		}
	}
}
