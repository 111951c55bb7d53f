package bench

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Weight is what one module (or the standard library, or the Go
// runtime's tables) costs a binary.
type Weight struct {
	Module string `json:"module"`
	// Bytes of the binary's file-backed sections (code, read-only data,
	// data) in the module's symbols, by `go tool nm -size`.
	Bytes int64 `json:"bytes"`
	// InitMs, InitBytes and InitAllocs are the module's package
	// initialisation at start-up, by GODEBUG=inittrace=1.
	InitMs     float64 `json:"init_ms"`
	InitBytes  int64   `json:"init_bytes"`
	InitAllocs int64   `json:"init_allocs"`
	// IdleHeap is the heap the module's code allocated and still holds
	// at idle (an in-use heap profile; see IdleHeapByModule).
	IdleHeap int64 `json:"idle_heap"`
}

// Names of the rows that are no module.
const (
	ModStd     = "std (Go runtime and standard library)"
	ModTables  = "runtime tables (pclntab, funcdata; grow with code)"
	ModUnknown = "(other)"
	modPadding = "(between symbols)"
)

// moduleOf maps a package path to its module: the longest module path
// that is a prefix of it, std for a path whose first element has no dot.
func moduleOf(mods []string, pkg string) string {
	first, _, _ := strings.Cut(pkg, "/")
	if !strings.Contains(first, ".") {
		return ModStd
	}
	best := ""
	for _, m := range mods {
		if (pkg == m || strings.HasPrefix(pkg, m+"/")) && len(m) > len(best) {
			best = m
		}
	}
	if best == "" {
		return ModUnknown
	}
	return best
}

// symbolPackage is the package of a symbol name as `go tool nm` prints
// it: "github.com/x/y.(*T).M" is github.com/x/y; type and itab symbols
// name their type's package; "" for the runtime's own tables.
func symbolPackage(name string) string {
	for _, p := range []string{"go:itab.", "type:", "go:info.", "go:cuinfo."} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			name = rest
			break
		}
	}
	if strings.HasPrefix(name, "go:") || name == "" {
		return ""
	}
	// Compiler-made functions of a type (equality of [10]pkg.T) belong
	// to the type's package.
	name = strings.TrimPrefix(name, ".eq.")
	for strings.HasPrefix(name, "[") {
		if i := strings.IndexByte(name, ']'); i > 0 {
			name = name[i+1:]
		} else {
			break
		}
	}
	name = strings.TrimLeft(name, "*")
	// Generic instantiations hold other paths in brackets: look for the
	// package before the first bracket or parenthesis.
	head := name
	if i := strings.IndexAny(head, "[("); i >= 0 {
		head = head[:i]
	}
	slash := strings.LastIndex(head, "/")
	dot := strings.Index(head[slash+1:], ".")
	if dot < 0 {
		return ""
	}
	return strings.ReplaceAll(head[:slash+1+dot], "%2e", ".")
}

// BinaryWeights measures what each module costs the binary at path: the
// size of its symbols in file-backed sections (`go tool nm -size`, which
// needs a binary built without -s), its package initialisation at
// start-up (GODEBUG=inittrace=1, running the binary with initArgs, e.g.
// "version"), sorted by size, biggest first.
func BinaryWeights(ctx context.Context, goCmd, path string, initArgs ...string) ([]Weight, error) {
	mods, err := Modules(path)
	if err != nil {
		return nil, err
	}
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	type span struct{ lo, hi uint64 }
	var fileBacked []span
	for _, s := range f.Sections {
		if s.Type == elf.SHT_PROGBITS && s.Flags&elf.SHF_ALLOC != 0 {
			fileBacked = append(fileBacked, span{s.Addr, s.Addr + s.Size})
		}
	}
	_ = f.Close()
	inFile := func(addr uint64) bool {
		for _, s := range fileBacked {
			if addr >= s.lo && addr < s.hi {
				return true
			}
		}
		return false
	}

	by := map[string]*Weight{}
	row := func(m string) *Weight {
		if by[m] == nil {
			by[m] = &Weight{Module: m}
		}
		return by[m]
	}
	out, err := exec.CommandContext(ctx, goCmd, "tool", "nm", "-size", path).Output()
	if err != nil {
		return nil, fmt.Errorf("go tool nm: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		// "  addr  size  type  name", the name may hold spaces.
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		addr, err1 := strconv.ParseUint(fields[0], 16, 64)
		size, err2 := strconv.ParseInt(fields[1], 10, 64)
		if err1 != nil || err2 != nil || size == 0 || !inFile(addr) {
			continue
		}
		name := strings.Join(fields[3:], " ")
		pkg := symbolPackage(name)
		m := ModTables
		if pkg != "" {
			m = moduleOf(mods, pkg)
		}
		row(m).Bytes += size
	}

	inits, err := InitTrace(ctx, path, initArgs...)
	if err != nil {
		return nil, err
	}
	for _, it := range inits {
		w := row(moduleOf(mods, it.Package))
		w.InitMs += it.Ms
		w.InitBytes += it.Bytes
		w.InitAllocs += it.Allocs
	}
	var ws []Weight
	for _, w := range by {
		ws = append(ws, *w)
	}
	slices.SortFunc(ws, func(a, b Weight) int { return int(b.Bytes - a.Bytes) })
	return ws, nil
}

// Init is one package's initialisation, as GODEBUG=inittrace=1 reports it.
type Init struct {
	Package string  `json:"package"`
	Ms      float64 `json:"ms"`
	Bytes   int64   `json:"bytes"`
	Allocs  int64   `json:"allocs"`
}

var initLine = regexp.MustCompile(`^init (\S+) @[0-9.]+ ms, ([0-9.]+) ms clock, ([0-9]+) bytes, ([0-9]+) allocs`)

// InitTrace runs path with args under GODEBUG=inittrace=1 and returns
// every package initialisation it reports, in order.
func InitTrace(ctx context.Context, path string, args ...string) ([]Init, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr, cmd.Stdout = &stderr, io.Discard
	err := cmd.Run()
	inits := ParseInitTrace(stderr.String())
	if len(inits) == 0 {
		// The exit status does not matter (a usage message may end it),
		// the trace does.
		return nil, fmt.Errorf("%s %s: no inittrace (%v): %s", path, strings.Join(args, " "), err, lastLine(stderr.String()))
	}
	return inits, nil
}

// ParseInitTrace reads GODEBUG=inittrace=1 output.
func ParseInitTrace(s string) []Init {
	var out []Init
	for _, line := range strings.Split(s, "\n") {
		m := initLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ms, _ := strconv.ParseFloat(m[2], 64)
		b, _ := strconv.ParseInt(m[3], 10, 64)
		n, _ := strconv.ParseInt(m[4], 10, 64)
		out = append(out, Init{Package: m[1], Ms: ms, Bytes: b, Allocs: n})
	}
	return out
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// HeapRecord is one stack of a text heap profile (debug=1): the bytes and
// objects it holds and its frames, innermost first.
type HeapRecord struct {
	InUseObjects, InUseBytes int64
	Frames                   []string // function names
	Lines                    []string // file:line of each frame
}

var (
	heapHead  = regexp.MustCompile(`^(\d+): (\d+) \[(\d+): (\d+)\] @`)
	heapFrame = regexp.MustCompile(`^#\s+0x[0-9a-f]+\s+(\S+)\+0x[0-9a-f]+\s+(\S+)`)
)

// ParseHeapProfile reads a heap profile written with debug=1.
func ParseHeapProfile(r io.Reader) ([]HeapRecord, error) {
	var out []HeapRecord
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if m := heapHead.FindStringSubmatch(line); m != nil {
			objs, _ := strconv.ParseInt(m[1], 10, 64)
			b, _ := strconv.ParseInt(m[2], 10, 64)
			out = append(out, HeapRecord{InUseObjects: objs, InUseBytes: b})
			continue
		}
		if strings.HasPrefix(line, "# runtime.MemStats") {
			break
		}
		if m := heapFrame.FindStringSubmatch(line); m != nil && len(out) > 0 {
			r := &out[len(out)-1]
			r.Frames = append(r.Frames, m[1])
			r.Lines = append(r.Lines, m[2])
		}
	}
	return out, sc.Err()
}

// Owner is the frame a heap record is charged to: the innermost frame
// outside the standard library (the code that asked for the memory, even
// when bufio or encoding/json allocated it), else the innermost frame.
func (h HeapRecord) Owner() (fn, line string) {
	for i, f := range h.Frames {
		if p := symbolPackage(f); p != "" && moduleOf(nil, p) != ModStd {
			return f, h.Lines[i]
		}
	}
	if len(h.Frames) == 0 {
		return "?", "?"
	}
	return h.Frames[0], h.Lines[0]
}

// HeapByModule sums in-use bytes by the module of each record's owner
// (see HeapRecord.Owner), given the binary's modules.
func HeapByModule(recs []HeapRecord, mods []string) map[string]int64 {
	out := map[string]int64{}
	for _, r := range recs {
		fn, _ := r.Owner()
		m := ModStd
		if p := symbolPackage(fn); p != "" {
			m = moduleOf(mods, p)
		}
		out[m] += r.InUseBytes
	}
	return out
}

// Modules lists the main module and the dependencies built into path.
func Modules(path string) ([]string, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, err
	}
	mods := []string{bi.Main.Path}
	for _, d := range bi.Deps {
		mods = append(mods, d.Path)
	}
	return mods, nil
}

// DevOnly are the module and packages a release binary must not link:
// the embedded NATS server and the API emulator are for `agentrelay dev`.
var DevOnly = []string{
	"github.com/nats-io/nats-server/v2",
	"github.com/agentrelay/agentrelay/agentapi/emulator",
	"github.com/agentrelay/agentrelay/internal/natsembed",
}

// DevOnlyLinked lists what of DevOnly the binary at path links: modules
// by its build information (`go version -m`), packages by its symbols
// (`go tool nm`, which needs a binary built without -s).
func DevOnlyLinked(ctx context.Context, goCmd, path string) ([]string, error) {
	var found []string
	mods, err := Modules(path)
	if err != nil {
		return nil, err
	}
	for _, m := range mods {
		if slices.Contains(DevOnly, m) {
			found = append(found, "module "+m)
		}
	}
	out, err := exec.CommandContext(ctx, goCmd, "tool", "nm", path).Output()
	if err != nil {
		return nil, fmt.Errorf("go tool nm: %w", err)
	}
	for _, p := range DevOnly {
		if bytes.Contains(out, []byte(" "+p+".")) || bytes.Contains(out, []byte(" "+p+"/")) {
			found = append(found, "symbols of "+p)
		}
	}
	return found, nil
}

// WriteWeightsSideBySide writes two binaries' weight by module in
// Markdown, the second's biggest first; sizes are each binary's stripped
// size spread over its modules in proportion to their symbols.
func WriteWeightsSideBySide(w io.Writer, nameA string, a []Weight, strippedA int64, nameB string, b []Weight, strippedB int64, top int) {
	share := func(ws []Weight, stripped int64) map[string]float64 {
		var total int64
		for _, x := range ws {
			total += x.Bytes
		}
		out := map[string]float64{}
		for _, x := range ws {
			if total > 0 {
				out[x.Module] = float64(x.Bytes) / float64(total) * float64(stripped)
			}
		}
		return out
	}
	sa, sb := share(a, strippedA), share(b, strippedB)
	fmt.Fprintf(w, "| module | %s | %s | %s: init at start-up | init allocations |\n", nameA, nameB, nameB)
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	var rest Weight
	var restA float64
	restN := 0
	for i, x := range b {
		if i >= top {
			rest.Bytes += x.Bytes
			rest.InitMs += x.InitMs
			rest.InitBytes += x.InitBytes
			rest.InitAllocs += x.InitAllocs
			restA += sa[x.Module]
			restN++
			continue
		}
		fmt.Fprintf(w, "| %s | %.2f MB | %.2f MB | %.2f ms | %.1f KiB in %d |\n", x.Module, sa[x.Module]/1e6, sb[x.Module]/1e6, x.InitMs, float64(x.InitBytes)/1024, x.InitAllocs)
	}
	var restB float64
	for i, x := range b {
		if i >= top {
			restB += sb[x.Module]
		}
	}
	for _, x := range a {
		if _, ok := sb[x.Module]; !ok {
			restA += sa[x.Module]
		}
	}
	if restN > 0 {
		fmt.Fprintf(w, "| %d more modules | %.2f MB | %.2f MB | %.2f ms | %.1f KiB in %d |\n", restN, restA/1e6, restB/1e6, rest.InitMs, float64(rest.InitBytes)/1024, rest.InitAllocs)
	}
	var ms float64
	var ib, ia int64
	for _, x := range b {
		ms, ib, ia = ms+x.InitMs, ib+x.InitBytes, ia+x.InitAllocs
	}
	fmt.Fprintf(w, "| **total (stripped binary)** | %.2f MB | %.2f MB | %.2f ms | %.1f KiB in %d |\n\n", float64(strippedA)/1e6, float64(strippedB)/1e6, ms, float64(ib)/1024, ia)
}

// WriteWeights writes a binary's weight by module in Markdown: the top
// rows, then the rest summed. stripped is the size of the release build
// (-s -w) of the same code: the share column spreads it over the modules
// in proportion to their symbols.
func WriteWeights(w io.Writer, ws []Weight, stripped int64, top int) {
	var total int64
	for _, x := range ws {
		total += x.Bytes
	}
	fmt.Fprintln(w, "| module | code and data (`go tool nm -size`) | ≈ share of the stripped binary | init at start-up (inittrace) | init allocations |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	var rest Weight
	restN := 0
	row := func(x Weight, name string) {
		share := ""
		if total > 0 && stripped > 0 {
			share = fmt.Sprintf("%.2f MB", float64(x.Bytes)/float64(total)*float64(stripped)/1e6)
		}
		fmt.Fprintf(w, "| %s | %.2f MB | %s | %.2f ms | %.1f KiB in %d |\n", name, float64(x.Bytes)/1e6, share, x.InitMs, float64(x.InitBytes)/1024, x.InitAllocs)
	}
	for i, x := range ws {
		if i >= top {
			rest.Bytes += x.Bytes
			rest.InitMs += x.InitMs
			rest.InitBytes += x.InitBytes
			rest.InitAllocs += x.InitAllocs
			restN++
			continue
		}
		row(x, x.Module)
	}
	if restN > 0 {
		row(rest, fmt.Sprintf("%d more modules", restN))
	}
	var sum Weight
	for _, x := range ws {
		sum.InitMs += x.InitMs
		sum.InitBytes += x.InitBytes
		sum.InitAllocs += x.InitAllocs
	}
	sum.Bytes = total
	row(sum, "**total**")
	fmt.Fprintln(w)
}

// Resident is where a running process's RSS in its own binary's pages
// lies: code by module, and the read-only data by kind.
type Resident struct {
	// Code is resident code (text) by module, bytes.
	Code map[string]int64 `json:"code"`
	// Data is resident read-only data and the data segment by region:
	// type descriptors, strings, pclntab (function tables: traceback, GC
	// stack maps), other read-only data, data.
	Data map[string]int64 `json:"data"`
}

// ResidentByModule reads /proc/PID/pagemap for the pages of the binary the
// process runs, and charges each resident page of code to the modules whose
// symbols it holds (by bytes), and each page of data to its region. syms
// is an unstripped build of the same binary (same layout; see bench.mk).
func ResidentByModule(ctx context.Context, goCmd string, pid int, syms string) (Resident, error) {
	res := Resident{Code: map[string]int64{}, Data: map[string]int64{}}
	layout, err := readBinaryLayout(ctx, goCmd, syms)
	if err != nil {
		return res, err
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return res, err
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return res, err
	}
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return res, err
	}
	defer pm.Close()
	for _, m := range exeMappings(string(maps), exe) {
		n := (m.end - m.start) / pageSize
		entries := make([]byte, 8*n)
		if _, err := pm.ReadAt(entries, int64(m.start/pageSize*8)); err != nil {
			return res, fmt.Errorf("pagemap: %w", err)
		}
		layout.chargeResident(&res, m.start, entries)
	}
	return res, nil
}

// pageSize is the page size /proc/PID/pagemap has one entry per.
const pageSize = 4096

// binaryLayout is where a binary's code symbols and data regions lie, from
// its symbol table.
type binaryLayout struct {
	code  []codeSymbol      // by address
	marks map[string]uint64 // the runtime's section boundary symbols
}

// codeSymbol is one function's code and the module it belongs to.
type codeSymbol struct {
	lo, hi uint64
	mod    string
}

// readBinaryLayout lists the code symbols of the unstripped build syms, by
// module, and the addresses of the section boundaries (go tool nm).
func readBinaryLayout(ctx context.Context, goCmd, syms string) (binaryLayout, error) {
	mods, err := Modules(syms)
	if err != nil {
		return binaryLayout{}, err
	}
	out, err := exec.CommandContext(ctx, goCmd, "tool", "nm", "-size", "-sort", "address", syms).Output()
	if err != nil {
		return binaryLayout{}, fmt.Errorf("go tool nm: %w", err)
	}
	l := binaryLayout{marks: map[string]uint64{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		addr, err1 := strconv.ParseUint(f[0], 16, 64)
		size, err2 := strconv.ParseUint(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		name := strings.Join(f[3:], " ")
		switch name {
		case "runtime.text", "runtime.etext", "runtime.types", "go:string.*", "go:funcdesc", "runtime.erodata",
			"runtime.pclntab", "runtime.epclntab", "runtime.noptrdata", "runtime.edata", "runtime.rodata":
			l.marks[name] = addr
		}
		if (f[2] == "T" || f[2] == "t") && size > 0 {
			m := ModTables
			if p := symbolPackage(name); p != "" {
				m = moduleOf(mods, p)
			}
			l.code = append(l.code, codeSymbol{addr, addr + size, m})
		}
	}
	return l, nil
}

// region names the data region address a lies in, or "" for code.
func (l binaryLayout) region(a uint64) string {
	switch {
	case a < l.marks["runtime.etext"]:
		return "" // code
	case a < l.marks["go:string.*"]:
		return "type descriptors"
	case a < l.marks["go:funcdesc"]:
		return "strings"
	case a < l.marks["runtime.pclntab"]:
		return "other read-only data"
	case a < l.marks["runtime.epclntab"]:
		return "pclntab (function tables)"
	case a < l.marks["runtime.noptrdata"]:
		return "other read-only data"
	default:
		return "data"
	}
}

// addressRange is one mapping of a process's address space, [start, end).
type addressRange struct{ start, end uint64 }

// exeMappings returns the mappings of the file exe in /proc/PID/maps.
func exeMappings(maps, exe string) []addressRange {
	var out []addressRange
	for _, line := range strings.Split(maps, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[5] != exe {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		out = append(out, addressRange{start, end})
	}
	return out
}

// chargeResident adds to res the resident pages among the pagemap entries
// (8 bytes per page) of the mapping that starts at start.
func (l binaryLayout) chargeResident(res *Resident, start uint64, entries []byte) {
	ci := 0
	for i := range uint64(len(entries) / 8) {
		if entries[8*i+7]&0x80 == 0 { // bit 63: present
			continue
		}
		pg := start + i*pageSize
		if r := l.region(pg); r != "" {
			res.Data[r] += pageSize
			continue
		}
		// Charge the page to the symbols on it, by bytes; what no
		// symbol covers (padding) to the runtime's tables.
		for ci < len(l.code) && l.code[ci].hi <= pg {
			ci++
		}
		covered := uint64(0)
		for j := ci; j < len(l.code) && l.code[j].lo < pg+pageSize; j++ {
			b := min(l.code[j].hi, pg+pageSize) - max(l.code[j].lo, pg)
			res.Code[l.code[j].mod] += int64(b)
			covered += b
		}
		res.Code[modPadding] += int64(pageSize - covered)
	}
}
