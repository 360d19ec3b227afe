//! Sending a firmware "gencmd" (`pmic_read_adc`) to the VideoCore, behind a trait:
//! through the mailbox (`/dev/vcio`, the `GET_GENCMD_RESULT` property tag, as
//! `vcgencmd` itself does: no process per sample), or by running `vcgencmd` when the
//! mailbox is not there.
//!
//! The property buffer (raspberrypi/utils `vcgencmd`, the kernel's
//! `drivers/char/broadcom/vcio.c`): `[size, 0 = request, tag 0x00030080, value
//! buffer length, request length, error code, command bytes … (NUL-terminated,
//! padded to the buffer), 0 = end tag]`, sent with `IOCTL_MBOX_PROPERTY =
//! _IOWR(100, 0, char *)`; the firmware writes its text reply over the command, and
//! its error code into word 5.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The property tag that runs a gencmd and returns its text.
pub const TAG_GET_GENCMD_RESULT: u32 = 0x0003_0080;
/// Bytes of the command / reply buffer (vcgencmd's `MAX_STRING`).
pub const MAX_STRING: usize = 1024;
/// `code` word of a buffer the firmware processed successfully.
pub const RESPONSE_OK: u32 = 0x8000_0000;
/// Words before the command bytes.
const HEADER_WORDS: usize = 6;

/// A gencmd could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum GencmdError {
    /// The mailbox device failed.
    #[error("mailbox '{device}': {source} (is the user in group 'video'?)")]
    Mailbox {
        /// Device path.
        device: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The firmware did not process the buffer, or returned an error code.
    #[error("mailbox '{device}': firmware answered code {code:#010x}, gencmd error {error}")]
    Firmware {
        /// Device path.
        device: PathBuf,
        /// Buffer response code.
        code: u32,
        /// Word 5: the gencmd's error.
        error: u32,
    },
    /// The command does not fit the buffer.
    #[error("gencmd '{0}' is longer than {MAX_STRING} bytes")]
    TooLong(String),
    /// `vcgencmd` could not be run or failed.
    #[error("running '{program}': {message}")]
    Process {
        /// The program.
        program: PathBuf,
        /// What happened.
        message: String,
    },
}

/// Something that runs a gencmd and returns its text reply.
pub trait Gencmd: Send {
    /// Runs `cmd` (e.g. `pmic_read_adc`).
    fn request(&mut self, cmd: &str) -> Result<String, GencmdError>;
    /// Where requests go, for `describe()`.
    fn describe(&self) -> String;
}

/// The mailbox property ioctl, behind a trait so tests drive a fake firmware.
pub trait MboxDevice: Send {
    /// Sends a property buffer; the firmware answers in place.
    fn property(&mut self, buf: &mut [u32]) -> io::Result<()>;
    /// The device path.
    fn path(&self) -> &Path;
}

/// `/dev/vcio` (group `video`).
pub struct Vcio {
    file: std::fs::File,
    path: PathBuf,
}

/// `_IOWR(100, 0, char *)`: direction read|write (3 << 30), argument size (a pointer),
/// type 100, number 0.
pub const IOCTL_MBOX_PROPERTY: u64 =
    (3 << 30) | ((std::mem::size_of::<*mut libc::c_char>() as u64) << 16) | (100 << 8);

impl Vcio {
    /// Opens the device.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Vcio {
            file,
            path: path.to_path_buf(),
        })
    }
}

impl MboxDevice for Vcio {
    fn property(&mut self, buf: &mut [u32]) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: the buffer is valid for its whole declared size (word 0), which the
        // firmware reads and writes in place; the fd is open for the call.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                IOCTL_MBOX_PROPERTY as _,
                buf.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// The property buffer for `cmd`.
pub fn encode_request(cmd: &str) -> Result<Vec<u32>, GencmdError> {
    if cmd.len() + 1 >= MAX_STRING {
        return Err(GencmdError::TooLong(cmd.into()));
    }
    let words = HEADER_WORDS + MAX_STRING / 4 + 1;
    let mut buf = vec![0u32; words];
    buf[0] = (words * 4) as u32;
    buf[1] = 0;
    buf[2] = TAG_GET_GENCMD_RESULT;
    buf[3] = MAX_STRING as u32;
    buf[4] = 0;
    buf[5] = 0;
    let mut bytes = [0u8; MAX_STRING];
    bytes[..cmd.len()].copy_from_slice(cmd.as_bytes());
    for (i, chunk) in bytes.chunks_exact(4).enumerate() {
        buf[HEADER_WORDS + i] = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    // The end tag is the last word, already 0.
    Ok(buf)
}

/// The text reply in a processed buffer (up to its first NUL), or the firmware's
/// error.
pub fn decode_reply(buf: &[u32], device: &Path) -> Result<String, GencmdError> {
    let code = buf.get(1).copied().unwrap_or(0);
    let error = buf.get(5).copied().unwrap_or(u32::MAX);
    if code != RESPONSE_OK || error != 0 {
        return Err(GencmdError::Firmware {
            device: device.to_path_buf(),
            code,
            error,
        });
    }
    let bytes: Vec<u8> = buf
        .iter()
        .skip(HEADER_WORDS)
        .take(MAX_STRING / 4)
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    // The reply may hold NUL-separated lines: keep everything up to the trailing
    // NULs; the parser splits on NUL as well as newline.
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// Gencmds through a mailbox device.
pub struct Mailbox<D> {
    dev: D,
}

impl<D: MboxDevice> Mailbox<D> {
    /// Wraps a device.
    pub fn new(dev: D) -> Self {
        Mailbox { dev }
    }
}

impl<D: MboxDevice> Gencmd for Mailbox<D> {
    fn request(&mut self, cmd: &str) -> Result<String, GencmdError> {
        let mut buf = encode_request(cmd)?;
        self.dev
            .property(&mut buf)
            .map_err(|source| GencmdError::Mailbox {
                device: self.dev.path().to_path_buf(),
                source,
            })?;
        decode_reply(&buf, self.dev.path())
    }

    fn describe(&self) -> String {
        format!("mailbox {}", self.dev.path().display())
    }
}

/// Gencmds by running `vcgencmd CMD` (a process per request: the fallback).
pub struct VcgencmdProcess {
    program: PathBuf,
}

impl VcgencmdProcess {
    /// `program` as configured, or `vcgencmd` found on PATH.
    pub fn new(program: Option<&Path>) -> Result<Self, GencmdError> {
        let program = match program {
            Some(p) => p.to_path_buf(),
            None => find_on_path("vcgencmd").ok_or_else(|| GencmdError::Process {
                program: "vcgencmd".into(),
                message: "not found on PATH (set vcgencmd = \"PATH\" in the sensor entry, or give the user access to /dev/vcio)".into(),
            })?,
        };
        Ok(VcgencmdProcess { program })
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

impl Gencmd for VcgencmdProcess {
    fn request(&mut self, cmd: &str) -> Result<String, GencmdError> {
        let err = |message: String| GencmdError::Process {
            program: self.program.clone(),
            message,
        };
        let out = Command::new(&self.program)
            .args(cmd.split_whitespace())
            .output()
            .map_err(|e| err(e.to_string()))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(err(format!(
                "exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(text)
    }

    fn describe(&self) -> String {
        format!("process {}", self.program.display())
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    /// A fake VideoCore: checks the request the way the firmware reads it and
    /// writes `reply` (or a gencmd error) back in place.
    pub struct FakeFirmware {
        pub reply: String,
        pub error: u32,
        pub path: PathBuf,
        pub seen: Vec<String>,
    }

    impl MboxDevice for FakeFirmware {
        fn property(&mut self, buf: &mut [u32]) -> io::Result<()> {
            if buf[0] as usize != buf.len() * 4 || buf[2] != TAG_GET_GENCMD_RESULT {
                return Err(io::Error::from(io::ErrorKind::InvalidInput));
            }
            let bytes: Vec<u8> = buf[HEADER_WORDS..HEADER_WORDS + MAX_STRING / 4]
                .iter()
                .flat_map(|w| w.to_ne_bytes())
                .collect();
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            self.seen
                .push(String::from_utf8_lossy(&bytes[..end]).into_owned());
            let mut out = [0u8; MAX_STRING];
            let n = self.reply.len().min(MAX_STRING - 1);
            out[..n].copy_from_slice(&self.reply.as_bytes()[..n]);
            for (i, c) in out.chunks_exact(4).enumerate() {
                buf[HEADER_WORDS + i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            }
            buf[1] = RESPONSE_OK;
            buf[4] = 0x8000_0000 | (n as u32 + 1);
            buf[5] = self.error;
            Ok(())
        }

        fn path(&self) -> &Path {
            &self.path
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeFirmware;
    use super::*;

    #[test]
    fn ioctl_number_matches_the_kernel() {
        // _IOWR(100, 0, char *) on a 64-bit kernel.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(IOCTL_MBOX_PROPERTY, 0xC008_6400);
        #[cfg(target_pointer_width = "32")]
        assert_eq!(IOCTL_MBOX_PROPERTY, 0xC004_6400);
    }

    #[test]
    fn request_layout() {
        let b = encode_request("pmic_read_adc").expect("fits");
        assert_eq!(b.len(), 6 + 256 + 1);
        assert_eq!(b[0] as usize, b.len() * 4);
        assert_eq!((b[1], b[2], b[3], b[4], b[5]), (0, 0x30080, 1024, 0, 0));
        assert_eq!(b[6].to_ne_bytes(), *b"pmic");
        assert_eq!(*b.last().expect("end tag"), 0);
        assert!(encode_request(&"x".repeat(2000)).is_err());
    }

    #[test]
    fn mailbox_round_trip_against_a_fake_firmware() {
        let reply = crate::power::pi5pmic::parse::captures::IDLE.replace('\n', "\0");
        let mut m = Mailbox::new(FakeFirmware {
            reply: reply.clone(),
            error: 0,
            path: "/dev/vcio".into(),
            seen: vec![],
        });
        let text = m.request("pmic_read_adc").expect("reply");
        assert_eq!(text, reply.trim_end_matches('\0'));
        assert_eq!(m.dev.seen, ["pmic_read_adc"]);
        // A gencmd error code is an error, naming the device.
        m.dev.error = 1;
        let e = m.request("pmic_read_adc").unwrap_err();
        assert!(
            e.to_string().contains("/dev/vcio") && e.to_string().contains("error 1"),
            "{e}"
        );
        // A buffer the firmware did not process.
        let mut buf = encode_request("x").expect("fits");
        buf[1] = 0x8000_0001;
        assert!(decode_reply(&buf, Path::new("/dev/vcio")).is_err());
    }

    #[test]
    fn missing_program_says_what_to_do() {
        let e = VcgencmdProcess::new(Some(Path::new("/nonexistent/vcgencmd")))
            .expect("configured path is taken as given")
            .request("pmic_read_adc")
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vcgencmd"), "{e}");
    }
}
