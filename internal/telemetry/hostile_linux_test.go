package telemetry_test

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/agentrelay/agentrelay/internal/telemetry"
)

// On a real terminal the text format is tint with colour, which lets ESC
// in a value through (it keeps coloured values that way): a value such as
// "\x1b[2J" would clear the operator's screen and "\x1b]0;...\x07" retitle
// it. The logger neutralises values before tint sees them; the test logs
// to a pseudo-terminal and reads what the terminal receives.
func TestTextLogOnATerminalNeutralisesEscapeSequences(t *testing.T) {
	master, slave := openPTY(t)
	log, err := telemetry.NewLogger(slave, slog.LevelInfo, "text")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 1)
	go func() {
		var b strings.Builder
		buf := make([]byte, 4096)
		for !strings.Contains(b.String(), "end-of-test") {
			n, err := master.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		out <- b.String()
	}()
	log.Info("dead-lettered", "subject", "events.\x1b[2J\x1b[H", "err", fmt.Errorf("nats: \x1b]0;pwned\x07"), "marker", "end-of-test")
	var got string
	select {
	case got = <-out:
	case <-time.After(5 * time.Second):
		t.Fatal("nothing read from the terminal")
	}
	// tint's own colours are SGR sequences (ESC [ ... m); anything else
	// came from the values.
	for _, injected := range []string{"\x1b[2J", "\x1b[H", "\x1b]0;"} {
		if strings.Contains(got, injected) {
			t.Errorf("the terminal received the value's escape sequence %q raw: %q", injected, got)
		}
	}
}

// openPTY opens a pseudo-terminal pair: what is written to slave can be
// read from master, and slave is a terminal to term.IsTerminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Skipf("unlocking the pseudo-terminal: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Skipf("pseudo-terminal number: %v", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("opening the pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}
