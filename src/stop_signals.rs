//! The requests to stop that come from outside the keyboard's Ctrl-C: SIGTERM (and, for the
//! dashboard, SIGHUP: its terminal is gone) on Unix; the console closing and Ctrl-Break on
//! Windows.

/// Listeners for the stop requests, registered once and polled with [`StopSignals::recv`].
pub struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
    #[cfg(windows)]
    close: tokio::signal::windows::CtrlClose,
    #[cfg(windows)]
    ctrl_break: tokio::signal::windows::CtrlBreak,
}

impl StopSignals {
    /// Listens from now on (inside a tokio runtime); with `hangup`, also for SIGHUP. Headless
    /// runs leave SIGHUP alone, so that `nohup` keeps them going.
    pub fn listen(hangup: bool) -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                hangup: hangup.then(|| signal(SignalKind::hangup())).transpose()?,
            })
        }
        #[cfg(windows)]
        {
            let _ = hangup;
            Ok(Self {
                close: tokio::signal::windows::ctrl_close()?,
                ctrl_break: tokio::signal::windows::ctrl_break()?,
            })
        }
        #[cfg(not(any(unix, windows)))]
        {
            let _ = hangup;
            Ok(Self {})
        }
    }

    /// Resolves at the next stop request.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let hangup = async {
                match &mut self.hangup {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.terminate.recv() => {}
                _ = hangup => {}
            }
        }
        #[cfg(windows)]
        {
            tokio::select! {
                _ = self.close.recv() => {}
                _ = self.ctrl_break.recv() => {}
            }
        }
        #[cfg(not(any(unix, windows)))]
        std::future::pending::<()>().await
    }
}
