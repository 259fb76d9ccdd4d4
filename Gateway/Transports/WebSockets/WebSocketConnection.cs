using System.Net.WebSockets;
using OrleansPush.Gateway.Connections;

namespace OrleansPush.Gateway.Transports.WebSockets;

/// <summary>A raw-protocol WebSocket connection: every frame is one UTF-8 JSON text message.</summary>
internal sealed class WebSocketConnection(WebSocket socket, string? userId, string? remoteAddress, OutboundLimits limits)
    : QueuedConnection<byte[]>("ws", userId, remoteAddress, limits)
{
    /// <summary>Queues a reply frame; replies share the bound with messages, so a flood of requests from a client
    /// that does not read its replies ends like any slow client.</summary>
    public bool Reply(byte[] frame) => Enqueue(frame, frame.Length);

    public override void DeliverPresence(PresenceChanged change) => Reply(WsFrames.Presence(change));

    /// <summary><c>{"op":"reset","topic":..,"code":..}</c>, behind every message already queued for the topic.</summary>
    public override void SubscriptionEnded(string topic, string code) => Reply(WsFrames.Reset(topic, code));

    protected override byte[] Encode(OutboundMessage message, out int size)
    {
        var frame = message.Encoded(WsFrames.Message);
        size = frame.Length;
        return frame;
    }

    protected override ValueTask WriteAsync(byte[] frame, bool moreQueued, CancellationToken cancellationToken) =>
        socket.SendAsync(frame, WebSocketMessageType.Text, WebSocketMessageFlags.EndOfMessage, cancellationToken);

    protected override async Task CloseTransportAsync(string reason, CancellationToken cancellationToken)
    {
        if (socket.State is not (WebSocketState.Open or WebSocketState.CloseReceived))
        {
            return;
        }

        // Going away for the server's reasons is a "bye" (reconnect and resume); for the client's own, an error.
        var last = reason is WireCodes.Slow or WireCodes.Shutdown
            ? WsFrames.Bye(reason, reconnect: true)
            : WsFrames.Error(null, reason, reason switch
            {
                WireCodes.TooLarge => "The frame was over the size limit.",
                WireCodes.Unauthorized => "The token expired or was revoked; reconnect with a fresh one.",
                WireCodes.Unavailable => "A message could not be sent on this connection; reconnect and resume.",
                _ => "The connection was closed.",
            });
        await socket.SendAsync(last, WebSocketMessageType.Text, WebSocketMessageFlags.EndOfMessage, cancellationToken);
        var status = reason switch
        {
            WireCodes.TooLarge => WebSocketCloseStatus.MessageTooBig,
            WireCodes.Shutdown => WebSocketCloseStatus.EndpointUnavailable,
            WireCodes.Unavailable => WebSocketCloseStatus.InternalServerError,
            _ => WebSocketCloseStatus.PolicyViolation,
        };
        await socket.CloseOutputAsync(status, reason, cancellationToken);
    }

    protected override void Abort() => socket.Abort();

    protected override bool IsTransportGone(Exception ex) => ex is WebSocketException || base.IsTransportGone(ex);
}
