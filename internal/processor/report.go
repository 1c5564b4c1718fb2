package processor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"time"
	"unicode/utf8"
)

// reportFile is the name of the file the "report" built-in writes.
const reportFile = "report.json"

// report is the content of report.json.
type report struct {
	Key         string `json:"key"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	ContentType string `json:"content_type"`
	Text        bool   `json:"text"`
	// Lines, Words and Bytes are set for text only, counted as wc does in
	// the C locale: newlines, and runs of non-blank bytes.
	Lines       *int64 `json:"lines,omitempty"`
	Words       *int64 `json:"words,omitempty"`
	Bytes       *int64 `json:"bytes,omitempty"`
	ProcessedAt string `json:"processed_at"`
}

// runReport streams the input once, hashing and counting together, and
// writes report.json into the output directory.
func runReport(ctx context.Context, env Env, log io.Writer) error {
	if err := checkAbs("Input", env.Input); err != nil {
		return err
	}
	if err := checkAbs("OutputDir", env.OutputDir); err != nil {
		return err
	}
	f, err := os.Open(env.Input)
	if err != nil {
		return fmt.Errorf("open input: %w", err)
	}
	defer f.Close()

	h := sha256.New()
	st := newTextStats()
	n, err := io.CopyBuffer(io.MultiWriter(h, st), ctxReader{ctx, f}, make([]byte, copyBufSize))
	if err != nil {
		return fmt.Errorf("read input: %w", err)
	}
	st.finish()

	r := report{
		Key:         env.InputKey,
		Size:        n,
		SHA256:      hex.EncodeToString(h.Sum(nil)),
		ContentType: contentType(st.head, env.InputKey),
		Text:        st.text,
		ProcessedAt: time.Now().UTC().Format(time.RFC3339),
	}
	if st.text {
		r.Lines, r.Words, r.Bytes = &st.lines, &st.words, &n
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(env.OutputDir, reportFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", reportFile, err)
	}
	fmt.Fprintf(log, "report: %d bytes, sha256 %s, %s, text=%t\n", n, r.SHA256, r.ContentType, r.Text)
	if st.text {
		fmt.Fprintf(log, "report: %d lines, %d words; wrote %s\n", st.lines, st.words, reportFile)
	} else {
		fmt.Fprintf(log, "report: wrote %s\n", reportFile)
	}
	return nil
}

// contentType sniffs head (the first 512 bytes) and falls back on the key's
// extension when the sniff is inconclusive.
func contentType(head []byte, key string) string {
	ct := http.DetectContentType(head)
	if ct == "application/octet-stream" {
		if byExt := mime.TypeByExtension(path.Ext(key)); byExt != "" {
			return byExt
		}
	}
	return ct
}

// byte classes for textStats.
const (
	clsOther   = iota // part of a word
	clsBlank          // separates words
	clsControl        // makes the stream binary
)

var byteClass = func() (t [256]uint8) {
	for c := 0; c < 0x20; c++ {
		t[c] = clsControl
	}
	for _, c := range []byte{' ', '\t', '\n', '\v', '\f', '\r'} {
		t[c] = clsBlank
	}
	t[0x1b] = clsOther // ESC: colour codes in logs are still text
	t[0x7f] = clsControl
	return t
}()

// textStats is an io.Writer that decides whether a stream looks like text
// (valid UTF-8, no control bytes but whitespace) and counts lines and words,
// in constant memory.
type textStats struct {
	head    []byte // the first 512 bytes, for content sniffing
	text    bool
	lines   int64
	words   int64
	inWord  bool
	pending []byte // an incomplete UTF-8 sequence at the end of the last chunk
}

func newTextStats() *textStats {
	return &textStats{head: make([]byte, 0, 512), text: true, pending: make([]byte, 0, utf8.UTFMax)}
}

func (s *textStats) Write(p []byte) (int, error) {
	if room := cap(s.head) - len(s.head); room > 0 {
		s.head = append(s.head, p[:min(room, len(p))]...)
	}
	for _, c := range p {
		switch byteClass[c] {
		case clsBlank:
			if c == '\n' {
				s.lines++
			}
			s.inWord = false
		case clsControl:
			s.text = false
			s.inWord = false
		default:
			if !s.inWord {
				s.inWord = true
				s.words++
			}
		}
	}
	if s.text {
		s.checkUTF8(p)
	}
	return len(p), nil
}

// checkUTF8 validates p as the continuation of the stream, carrying an
// incomplete trailing sequence over to the next chunk.
func (s *textStats) checkUTF8(p []byte) {
	for len(s.pending) > 0 && len(p) > 0 {
		s.pending = append(s.pending, p[0])
		p = p[1:]
		if utf8.FullRune(s.pending) {
			if r, size := utf8.DecodeRune(s.pending); r == utf8.RuneError && size == 1 {
				s.text = false
				return
			}
			s.pending = s.pending[:0]
		}
	}
	// Find where the last rune starts; if it is incomplete, keep it back.
	start := len(p)
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			start = i
			break
		}
	}
	if start < len(p) && !utf8.FullRune(p[start:]) {
		s.pending = append(s.pending, p[start:]...)
		p = p[:start]
	}
	if !utf8.Valid(p) {
		s.text = false
	}
}

// finish must be called at the end of the stream.
func (s *textStats) finish() {
	if len(s.pending) > 0 {
		s.text = false // truncated UTF-8 sequence
	}
}
