use futures::StreamExt;
use procwatch::{Interest, ProcWatcher};
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let w = ProcWatcher::new()?;
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", "true; (exit 3) & sleep 0.01 & wait; ls /nonexistent 2>/dev/null"]);
    let mut c = w.spawn(cmd, Interest::ALL)?;
    let t = std::time::Instant::now();
    while let Some(ev) = tokio::time::timeout(std::time::Duration::from_secs(5), c.events.next()).await? {
        println!("{:?} {:?}", t.elapsed(), ev);
    }
    println!("wait: {:?}", c.child.wait().await?);
    Ok(())
}
