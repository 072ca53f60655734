package testutil

import "net"

// Accept accepts on ln, in a goroutine of its own, until ln is closed, and
// hands each connection to each. A nil each holds the connections open,
// unanswered, until ln is closed: a peer that never answers.
func Accept(ln net.Listener, each func(net.Conn)) {
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if each == nil {
				held = append(held, c)
				continue
			}
			each(c)
		}
	}()
}
