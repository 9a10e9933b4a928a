//! `tungstenite-echo PORT`: a WebSocket echo server on 127.0.0.1:PORT (tokio's
//! multi-thread runtime, tokio-tungstenite), every text or binary message sent back.
//! Prints `listening PORT` once bound.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(message)) = socket.next().await {
        if message.is_text() || message.is_binary() {
            if socket.send(message).await.is_err() {
                return;
            }
        } else if message.is_close() {
            return;
        }
    }
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: tungstenite-echo PORT");
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    println!("listening {port}");
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    }
}
