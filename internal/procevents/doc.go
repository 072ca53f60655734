// Package procevents subscribes to the kernel's process events connector
// (NETLINK_CONNECTOR, group CN_IDX_PROC; drivers/connector/cn_proc.c) and
// decodes struct proc_event (include/uapi/linux/cn_proc.h).
//
// Decoding is pure (Decode, Datagram) and tested with byte literals and a
// fuzz target, so it builds and runs anywhere. The socket lives in
// conn_linux.go.
//
// The choice of library: vishvananda/netlink's ProcEventMonitor was evaluated
// and rejected. It gives no control over the receive buffer, does not check
// that the kernel acknowledged the subscription (a listener outside the
// initial PID or user namespace is silently ignored, cn_proc.c
// cn_proc_mcast_ctl), and stops on ENOBUFS instead of reporting the loss so
// the caller can resynchronise. We use mdlayher/netlink for the socket and
// decode proc_event ourselves.
package procevents
