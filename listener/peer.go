package listener

import (
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// peer is who is on the other end of a session.
type peer struct {
	addr string     // "192.0.2.1:4711", or the socket path
	ip   netip.Addr // zero for unix sockets
	uid  *int       // unix sockets: the client's uid (SO_PEERCRED)
	unix bool
}

func peerOf(c net.Conn) peer {
	// Under TLS and limitConn is the socket.
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	if uc, ok := c.(*net.UnixConn); ok {
		p := peer{addr: c.LocalAddr().String(), unix: true}
		if raw, err := uc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					uid := int(cred.Uid)
					p.uid = &uid
				}
			})
		}
		return p
	}
	p := peer{addr: c.RemoteAddr().String()}
	if ap, err := netip.ParseAddrPort(p.addr); err == nil {
		p.ip = ap.Addr().Unmap()
	}
	return p
}

// allowed reports whether the peer may submit without authenticating.
func (p peer) allowed(networks []netip.Prefix) bool {
	if p.unix {
		return true
	}
	for _, n := range networks {
		if n.Contains(p.ip) {
			return true
		}
	}
	return false
}
