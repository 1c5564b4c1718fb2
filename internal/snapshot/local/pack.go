package local

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/klauspost/compress/zstd"
)

// Blob types.
const (
	blobData byte = 0
	blobTree byte = 1
)

const (
	packMagic  = "CVYPACK1"
	entrySize  = 1 + 1 + 32 + 4 + 4 + 4
	flagZstd   = 1
	sampleSize = 64 << 10
)

// location is where a blob lives.
type location struct {
	Pack       ID
	Type       byte
	Compressed bool
	Offset     uint32
	Length     uint32 // stored
	Raw        uint32 // plaintext
}

// blobEntry is one row of a pack's table.
type blobEntry struct {
	ID ID
	location
}

func appendEntry(b []byte, e blobEntry) []byte {
	var flags byte
	if e.Compressed {
		flags = flagZstd
	}
	b = append(b, e.Type, flags)
	b = append(b, e.ID[:]...)
	b = binary.LittleEndian.AppendUint32(b, e.Offset)
	b = binary.LittleEndian.AppendUint32(b, e.Length)
	return binary.LittleEndian.AppendUint32(b, e.Raw)
}

func readEntry(b []byte, pack ID) blobEntry {
	var e blobEntry
	e.Type, e.Compressed = b[0], b[1]&flagZstd != 0
	copy(e.ID[:], b[2:34])
	e.Pack = pack
	e.Offset = binary.LittleEndian.Uint32(b[34:])
	e.Length = binary.LittleEndian.Uint32(b[38:])
	e.Raw = binary.LittleEndian.Uint32(b[42:])
	return e
}

// parsePack reads a whole pack's table, checking the pack's own hash.
func parsePack(sl *sealer, id ID, b []byte) ([]blobEntry, error) {
	if hashOf(b) != id {
		return nil, errors.New("content does not match its name")
	}
	return packTable(sl, id, b)
}

// A pack ends with its table: in an unencrypted repository the entries,
// their count and packMagic; in an encrypted one the sealed entries, the
// sealed table's length and packMagicSealed.
const packMagicSealed = "CVYPACK2"

// packMagicCompact ends a version 3 pack: its sealed table holds compact
// entries (entry.go).
const packMagicCompact = "CVYPACK3"

// packTable reads a pack's table without checking the pack's hash.
func packTable(sl *sealer, id ID, b []byte) ([]blobEntry, error) {
	if len(b) < 12 {
		return nil, errors.New("not a pack")
	}
	magic := string(b[len(b)-8:])
	var table []byte
	var start int
	switch {
	case sl == nil && magic == packMagic:
		n := int(binary.LittleEndian.Uint32(b[len(b)-12:]))
		start = len(b) - 12 - n*entrySize
		if n < 0 || start < 0 {
			return nil, errors.New("truncated table")
		}
		table = b[start : len(b)-12]
	case sl.compact() && magic == packMagicCompact:
		n := int(binary.LittleEndian.Uint32(b[len(b)-12:]))
		start = len(b) - 12 - n
		if n < 0 || start < 0 {
			return nil, errors.New("truncated table")
		}
		table, err := sl.open(nil, b[start:len(b)-12], adTable)
		if err != nil {
			return nil, fmt.Errorf("table %w", err)
		}
		out, _, err := readCompacts(table, -1, id, sl.blobOverhead())
		if err != nil {
			return nil, err
		}
		return checkInside(out, start)
	case sl != nil && !sl.compact() && magic == packMagicSealed:
		n := int(binary.LittleEndian.Uint32(b[len(b)-12:]))
		start = len(b) - 12 - n
		if n < 0 || start < 0 {
			return nil, errors.New("truncated table")
		}
		var err error
		if table, err = sl.open(nil, b[start:len(b)-12], adTable); err != nil {
			return nil, fmt.Errorf("table %w", err)
		}
		if len(table)%entrySize != 0 {
			return nil, errors.New("truncated table")
		}
	case magic == packMagic || magic == packMagicSealed || magic == packMagicCompact:
		return nil, errors.New("a pack of another repository version (unencrypted in an encrypted repository, or the reverse)")
	default:
		return nil, errors.New("not a pack")
	}
	out := make([]blobEntry, len(table)/entrySize)
	for i := range out {
		out[i] = readEntry(table[i*entrySize:], id)
	}
	return checkInside(out, start)
}

// checkInside refuses a table that points past its pack's blobs (which
// end at start).
func checkInside(entries []blobEntry, start int) ([]blobEntry, error) {
	for _, e := range entries {
		if int(e.Offset)+int(e.Length) > start {
			return nil, errors.New("table points outside the pack")
		}
	}
	return entries, nil
}

// codec compresses and decompresses blobs; one per goroutine.
type codec struct {
	enc  *zstd.Encoder
	dec  *zstd.Decoder
	sl   *sealer // nil: unencrypted
	buf  []byte  // openInto's plaintext
	sbuf []byte  // storeTemp's stored form
	pbuf []byte  // a pack being restored
	dbuf []byte  // an aligned copy for a direct write (off the heap)
}

// newCodec: zstd's frame checksum is left out, as every blob is checked
// against its BLAKE3 hash anyway (frames written with one still decode).
// Other encoder options (window size, lower memory, concurrency) measured
// no faster here: SpeedFastest runs ~135 MB/s on the benchmark's log text
// on this machine whatever they are, and SpeedDefault is slower and, on
// that text, no smaller.
// The encoder and decoder are made when first used: a codec that reads
// one small tree blob builds no encoder.
func (r *Repo) newCodec() *codec { return &codec{sl: r.sealer} }

func (c *codec) encoder() *zstd.Encoder {
	if c.enc == nil {
		c.enc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(false))
	}
	return c.enc
}

func (c *codec) decoder() *zstd.Decoder {
	if c.dec == nil {
		c.dec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<30))
	}
	return c.dec
}

// store returns the stored form of a blob's plaintext: compressed when
// that pays (see compress), then sealed in an encrypted repository.
func (c *codec) store(id ID, data []byte) ([]byte, bool) {
	z, compressed := c.compress(data)
	if c.sl == nil {
		return z, compressed
	}
	return c.sl.sealBlob(make([]byte, 0, len(z)+c.sl.blobOverhead()), id, z), compressed
}

// storeTemp is store with the stored form in the codec's own buffer,
// valid until the next call: for a blob that is copied into a pack at
// once. The blob is compressed behind room for the nonce and sealed where
// it is, so it is written once and allocates nothing.
func (c *codec) storeTemp(id ID, data []byte) ([]byte, bool) {
	if c.sl == nil {
		return c.compress(data)
	}
	pre := c.sl.blobPrefix()
	need := pre + len(data) + c.sl.blobOverhead()
	if cap(c.sbuf) < need {
		c.sbuf = make([]byte, 0, need)
	}
	z, compressed := c.compressTo(c.sbuf[:pre], data)
	if !compressed {
		z = append(c.sbuf[:pre], data...)
	}
	out := c.sl.sealBlobInPlace(z, id)
	if cap(out) <= 64<<20 {
		c.sbuf = out[:0]
	}
	return out, compressed
}

// compress returns the stored form of data and whether it is compressed.
// Incompressible data (random, already compressed) is stored raw: a sample
// is tried first, so most of it costs no full compression.
func (c *codec) compress(data []byte) ([]byte, bool) {
	if len(data) < 64 {
		return data, false
	}
	return c.compressTo(make([]byte, 0, len(data)/2), data)
}

// compressTo is compress appending the compressed form to dst; when data
// is stored raw, it returns data itself and false.
func (c *codec) compressTo(dst, data []byte) ([]byte, bool) {
	if len(data) < 64 {
		return data, false
	}
	n := len(dst)
	var z []byte
	if len(data) > 4*sampleSize {
		z = c.encoder().EncodeAll(data[:sampleSize], dst)
		if len(z)-n > sampleSize*31/32 {
			return data, false
		}
		// The sample's frame is kept, the rest follows as a second frame
		// (the decoder reads concatenated frames): compressing the
		// sample is not paid twice, at the cost of the second frame not
		// matching into the first 64 KiB.
		z = c.encoder().EncodeAll(data[sampleSize:], z)
	} else {
		z = c.encoder().EncodeAll(data, dst)
	}
	if len(z)-n >= len(data)-len(data)/32 {
		return data, false
	}
	return z, true
}

// open returns the plaintext of a stored blob and checks its hash (and,
// encrypted, its authentication).
func (c *codec) open(e blobEntry, stored []byte) ([]byte, error) {
	if c.sl != nil {
		stored = bytes.Clone(stored) // decrypted in place
	}
	data, err := c.sl.openBlob(e.ID, stored)
	if err != nil {
		return nil, fmt.Errorf("blob %s %w", e.ID, err)
	}
	stored = data
	if e.Compressed {
		var err error
		data, err = c.decoder().DecodeAll(stored, make([]byte, 0, e.Raw))
		if err != nil {
			return nil, fmt.Errorf("blob %s: %w", e.ID, err)
		}
	}
	if uint32(len(data)) != e.Raw || c.sl.blobID(data) != e.ID {
		return nil, fmt.Errorf("blob %s does not match its hash", e.ID)
	}
	return data, nil
}

// openInto is open with the plaintext in the codec's own buffer, valid
// until the next call: for a blob that is written out at once. stored is
// decrypted where it is, so it is overwritten (with zeros when it does
// not authenticate).
func (c *codec) openInto(e blobEntry, stored []byte) ([]byte, error) {
	return c.openAt(e, stored, -1)
}

// openAt is openInto with, for phase >= 0, the plaintext placed at an
// address congruent to phase modulo dioPage: where a restore writes it at
// a file offset of that phase, its page-aligned middle is then aligned in
// memory as a direct write needs (see writeDirect), with no copy. The
// plaintext is then in the codec's buffer rather than in stored.
func (c *codec) openAt(e blobEntry, stored []byte, phase int) ([]byte, error) {
	if c.sl != nil {
		var dst []byte // in place
		if phase >= 0 && !e.Compressed {
			dst = c.phased(len(stored), phase)
		}
		var err error
		if stored, err = c.sl.openBlobTo(dst, e.ID, stored); err != nil {
			return nil, fmt.Errorf("blob %s %w", e.ID, err)
		}
	}
	data := stored
	if e.Compressed {
		var err error
		dst := c.buf[:0]
		if phase >= 0 {
			dst = c.phased(int(e.Raw), phase)
		} else if cap(dst) < int(e.Raw) {
			dst = make([]byte, 0, e.Raw)
			c.buf = dst
		}
		data, err = c.decoder().DecodeAll(stored, dst)
		if err != nil {
			return nil, fmt.Errorf("blob %s: %w", e.ID, err)
		}
		if phase < 0 && cap(data) <= 64<<20 {
			c.buf = data[:0]
		}
	}
	if uint32(len(data)) != e.Raw || c.sl.blobID(data) != e.ID {
		return nil, fmt.Errorf("blob %s does not match its hash", e.ID)
	}
	return data, nil
}

// dioPage is the alignment openAt's phase is taken modulo: a page, at
// least any filesystem's direct I/O memory alignment.
const dioPage = 4096

// phased returns an empty slice of the codec's buffer with room for n
// bytes, starting at an address congruent to phase modulo dioPage.
func (c *codec) phased(n, phase int) []byte {
	if cap(c.buf) < n+dioPage {
		c.buf = make([]byte, 0, n+dioPage)
	}
	b := c.buf[:cap(c.buf)]
	skip := (phase - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))%dioPage) + dioPage) % dioPage
	return b[skip:skip]
}

// sealedPack is a pack ready to upload.
type sealedPack struct {
	ID      ID
	Body    []byte
	Entries []blobEntry
	// origin is the packer's buffer Body was built in (Body is a copy
	// when a last blob or the table outgrew it): what goes back to the
	// packer after the upload.
	origin []byte
}

// packer gathers blobs into packs and uploads them with a small pool.
// A pack is uploaded whole (its name is the hash of its bytes), so every
// pack in flight is a buffer of PackSize and more: at most maxPackBufs of
// them exist, reused from one pack to the next, which bounds the memory
// of a snapshot whatever the uploads' speed.
type packer struct {
	r    *Repo
	ctx  context.Context
	size int
	// crash is passed after each pack upload (crash.go); nil: none.
	crash *crashPoint
	// flush, when set, is given the packs uploaded so far each time
	// they hold flushBlobs blobs or more (Create writes an index object
	// of them), and forgets them: what a snapshot of a million files
	// holds of its new packs' tables stays bounded.
	flush      func([]sealedPack) error
	flushCount int // blobs in uploaded

	mu      sync.Mutex
	buf     []byte
	origin  []byte // the buffer buf started as
	entries []blobEntry
	owned   *packBufs

	queue chan sealedPack
	wg    sync.WaitGroup
	free  chan []byte // pack buffers back from their upload
	made  int         // pack buffers made, under mu

	resMu    sync.Mutex
	uploaded []sealedPack // Body dropped
	added    int64
	err      error
}

// maxPackBufs bounds the packs in memory at once: one being filled and
// one being uploaded. Each costs ~10 MiB of resident memory (and twice
// that with the collector's headroom); a second upload in flight measured
// no faster to the embedded server on 2 cores. Against a distant S3,
// where one 8 MiB upload may not keep up with the chunkers, raise it.
const maxPackBufs = 2

func newPacker(ctx context.Context, r *Repo) *packer {
	return newPackerSize(ctx, r, r.cfg.PackSize)
}

// treePackSize is the size of Create's packs of tree blobs, a quarter of
// the data packs': they are a small part of a snapshot, and two pack
// buffers more of the full size were a good part of the peak memory of a
// snapshot of small files.
func treePackSize(r *Repo) int { return min(r.cfg.PackSize, max(r.cfg.PackSize/4, 1<<20)) }

func newPackerSize(ctx context.Context, r *Repo, size int) *packer {
	n := min(r.cfg.Uploads, maxPackBufs-1)
	p := &packer{r: r, ctx: ctx, size: size, queue: make(chan sealedPack), free: make(chan []byte, maxPackBufs), owned: &packBufs{}}
	// A packer that is dropped without finish (a failed operation)
	// still hands its buffers back.
	runtime.AddCleanup(p, func(o *packBufs) { o.giveBack() }, p.owned)
	for i := 0; i < n; i++ {
		p.wg.Add(1)
		go p.upload()
	}
	return p
}

// add appends a stored blob; it blocks while every pack buffer is in use.
func (p *packer) add(id ID, typ byte, stored []byte, compressed bool, raw int) error {
	p.mu.Lock()
	if p.buf == nil {
		if err := p.newBufLocked(); err != nil {
			p.mu.Unlock()
			return err
		}
	}
	e := blobEntry{ID: id, location: location{Type: typ, Compressed: compressed, Offset: uint32(len(p.buf)), Length: uint32(len(stored)), Raw: uint32(raw)}}
	p.buf = append(p.buf, stored...)
	p.entries = append(p.entries, e)
	var sp sealedPack
	full := len(p.buf) >= p.size
	if full {
		sp = p.sealLocked()
	}
	p.mu.Unlock()
	if full {
		return p.send(sp)
	}
	return p.failed()
}

// newBufLocked takes a free pack buffer, or makes one while fewer than
// maxPackBufs exist, or waits for an upload to return one.
func (p *packer) newBufLocked() error {
	select {
	case b := <-p.free:
		p.buf, p.origin = b[:0], b[:0]
		return nil
	default:
	}
	if p.made < maxPackBufs {
		p.made++
		b := p.owned.get(p.size + p.size/4)
		p.buf, p.origin = b[:0], b[:0]
		return nil
	}
	select {
	case b := <-p.free:
		p.buf, p.origin = b[:0], b[:0]
		return nil
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

func (p *packer) sealLocked() sealedPack {
	b := p.buf
	if sl := p.r.sealer; sl != nil {
		table := make([]byte, 0, len(p.entries)*entrySize)
		magic := packMagicSealed
		if sl.compact() {
			table, magic = appendCompacts(table, p.entries, sl.blobOverhead()), packMagicCompact
		} else {
			for _, e := range p.entries {
				table = appendEntry(table, e)
			}
		}
		n := len(b)
		b = sl.seal(b, table, adTable)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(b)-n))
		b = append(b, magic...)
	} else {
		for _, e := range p.entries {
			b = appendEntry(b, e)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p.entries)))
		b = append(b, packMagic...)
	}
	sp := sealedPack{ID: hashOf(b), Body: b, Entries: p.entries, origin: p.origin}
	for i := range sp.Entries {
		sp.Entries[i].Pack = sp.ID
	}
	p.buf, p.origin, p.entries = nil, nil, nil
	return sp
}

func (p *packer) send(sp sealedPack) error {
	select {
	case p.queue <- sp:
		return p.failed()
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

func (p *packer) failed() error {
	p.resMu.Lock()
	defer p.resMu.Unlock()
	return p.err
}

func (p *packer) upload() {
	defer p.wg.Done()
	for sp := range p.queue {
		if p.failed() != nil {
			p.release(sp.origin)
			continue
		}
		err := p.r.putPack(p.ctx, sp.ID.String(), sp.Body)
		p.crash.hit()
		p.release(sp.origin)
		sp.origin = nil
		p.resMu.Lock()
		if err != nil && p.err == nil {
			p.err = err
		}
		if err == nil {
			p.added += int64(len(sp.Body))
			sp.Body = nil
			p.uploaded = append(p.uploaded, sp)
			p.flushCount += len(sp.Entries)
		}
		var flush []sealedPack
		if p.err == nil && p.flush != nil && p.flushCount >= cmp.Or(p.r.indexEvery, flushBlobs) {
			flush, p.uploaded, p.flushCount = p.uploaded, nil, 0
		}
		p.resMu.Unlock()
		if flush != nil {
			if err := p.flush(flush); err != nil {
				p.resMu.Lock()
				if p.err == nil {
					p.err = err
				}
				p.resMu.Unlock()
			}
		}
	}
}

// flushBlobs is how many blobs of uploaded packs a packer with flush
// holds before it hands them on: 65,536 table rows, about 5 MB.
const flushBlobs = 1 << 16

// release hands a pack buffer back once its upload is over: the one the
// pack was built in, whatever its body became.
func (p *packer) release(b []byte) {
	select {
	case p.free <- b:
	default:
	}
}

// flush seals the pack being filled, waits for every upload and returns
// the packs uploaded since the last flush. The packer is done after it.
func (p *packer) finish() ([]sealedPack, error) {
	p.mu.Lock()
	var sp sealedPack
	has := len(p.entries) > 0
	if has {
		sp = p.sealLocked()
	}
	p.mu.Unlock()
	var err error
	if has {
		err = p.send(sp)
	}
	close(p.queue)
	p.wg.Wait()
	p.owned.giveBack()
	if err == nil {
		err = p.failed()
	}
	return p.uploaded, err
}

// takeUploaded returns and forgets the packs uploaded so far.
func (p *packer) takeUploaded() []sealedPack {
	p.resMu.Lock()
	defer p.resMu.Unlock()
	u := p.uploaded
	p.uploaded, p.flushCount = nil, 0
	return u
}

func (p *packer) bytesAdded() int64 {
	p.resMu.Lock()
	defer p.resMu.Unlock()
	return p.added
}

// packBufs are the buffers a packer took from bigBufs, handed back when
// it finishes (or, dropped unfinished, when it is collected).
type packBufs struct {
	mu   sync.Mutex
	bufs [][]byte
}

func (o *packBufs) get(n int) []byte {
	b := bigBufs.get(n)
	o.mu.Lock()
	o.bufs = append(o.bufs, b)
	o.mu.Unlock()
	return b
}

func (o *packBufs) giveBack() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, b := range o.bufs {
		bigBufs.put(b)
	}
	o.bufs = nil
}
