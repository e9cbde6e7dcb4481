//! Byte streams the agent serves on: the virtio-serial port (QEMU) and
//! AF_VSOCK (Firecracker, vhost-vsock).
//!
//! A virtio-serial port is not a socket: it stays open across host
//! connections, `read` returns 0 while no host is connected, and `write`
//! blocks until one is. So the port is opened non-blocking and both
//! directions poll, and a [`Sink`] can be declared dead so output threads of
//! an ended session give up instead of blocking until the next host.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use banger_proto::{Frame, VIRTIO_PORT_NAME, VSOCK_PORT};

/// The shared write side of a session: one frame per lock, so frames of
/// concurrent execs never interleave.
pub struct Sink {
    w: Mutex<Box<dyn Write + Send>>,
    alive: Arc<AtomicBool>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("alive", &self.alive).finish()
    }
}

impl Sink {
    pub fn new(w: Box<dyn Write + Send>, alive: Arc<AtomicBool>) -> Sink {
        Sink {
            w: Mutex::new(w),
            alive,
        }
    }

    pub fn send(&self, frame: &Frame) -> io::Result<()> {
        if !self.alive.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let buf = frame
            .encode()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut w = self.w.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&buf)?;
        w.flush()
    }

    pub fn kill(&self) {
        self.alive.store(false, Ordering::Relaxed);
    }
}

/// Finds `/dev/vportNpM` whose sysfs name is [`VIRTIO_PORT_NAME`], waiting
/// for virtio_console to probe it.
pub fn find_virtio_port(timeout: Duration) -> Option<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(rd) = fs::read_dir("/sys/class/virtio-ports") {
            for e in rd.flatten() {
                let name = fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim() == VIRTIO_PORT_NAME {
                    let dev = PathBuf::from("/dev").join(e.file_name());
                    if dev.exists() {
                        return Some(dev);
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn poll1(fd: i32, events: libc::c_short, timeout_ms: i32) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&raw mut p, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(p.revents)
}

/// An open virtio-serial port.
#[derive(Debug, Clone)]
pub struct Port {
    file: Arc<File>,
}

impl Port {
    pub fn open(path: &PathBuf) -> io::Result<Port> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Port {
            file: Arc::new(file),
        })
    }

    /// Blocks until a host is connected and has sent something.
    pub fn wait_for_host(&self) -> io::Result<()> {
        loop {
            let ev = poll1(self.file.as_raw_fd(), libc::POLLIN, -1)?;
            if ev & libc::POLLIN != 0 {
                return Ok(());
            }
            // POLLHUP: no host. The port gives no event when one connects,
            // so look again shortly.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn reader(&self) -> PortReader {
        PortReader {
            file: self.file.clone(),
        }
    }

    pub fn writer(&self, alive: Arc<AtomicBool>) -> PortWriter {
        PortWriter {
            file: self.file.clone(),
            alive,
        }
    }
}

/// Read side of a port: EOF when the host disconnects.
#[derive(Debug)]
pub struct PortReader {
    file: Arc<File>,
}

impl Read for PortReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&*self.file).read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ev = poll1(self.file.as_raw_fd(), libc::POLLIN, -1)?;
                    if ev & libc::POLLHUP != 0 && ev & libc::POLLIN == 0 {
                        return Ok(0);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Write side of a port: gives up once its session is dead.
#[derive(Debug)]
pub struct PortWriter {
    file: Arc<File>,
    alive: Arc<AtomicBool>,
}

impl Write for PortWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            if !self.alive.load(Ordering::Relaxed) {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            match (&*self.file).write(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    poll1(self.file.as_raw_fd(), libc::POLLOUT, 200)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Listens on AF_VSOCK [`VSOCK_PORT`] when the guest has a vsock device.
#[expect(
    clippy::cast_possible_truncation,
    reason = "AF_VSOCK (40) and sizeof(sockaddr_vm) (16) fit their C types"
)]
pub fn vsock_listener() -> io::Result<Option<OwnedFd>> {
    if !std::path::Path::new("/dev/vsock").exists() {
        return Ok(None);
    }
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain old data; zeroed is valid.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = VSOCK_PORT;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    // SAFETY: addr is a valid sockaddr_vm of the given length.
    let r = unsafe {
        libc::bind(
            fd,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a bound socket.
    if unsafe { libc::listen(fd, 16) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(sock))
}

/// Accepts one connection on a listening socket.
pub fn accept(listener: &OwnedFd) -> io::Result<File> {
    loop {
        // SAFETY: the listener fd is valid; we do not need the peer address.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: accept4 returned a fresh fd we now own.
            return Ok(unsafe { File::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
