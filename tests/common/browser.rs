//! Headless Chromium through chromedriver (WebDriver), for the tests of
//! the web pages. `scripts/test.sh` installs both (ensure-chromium.sh).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::json;

/// `chromedriver` on a free port, stopped on drop.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // test.sh installs Chromium (scripts/ensure-chromium.sh); a missing
        // driver is a failure, not a skip.
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (scripts/ensure-chromium.sh installs it)");
        let driver = Self { child, port };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not listen within 10 s");
    }

    /// A headless Chromium window of `width` x `height`.
    pub async fn browser(&self, width: u32, height: u32) -> fantoccini::Client {
        let mut options = json!({"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", format!("--window-size={width},{height}"),
        ]});
        if Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
