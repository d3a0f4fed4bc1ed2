package bus

import (
	"os"
	"os/signal"
	"syscall"
)

func notifyTerm(c chan os.Signal) { signal.Notify(c, syscall.SIGTERM) }

func terminate(p *os.Process) { p.Signal(syscall.SIGTERM) }
