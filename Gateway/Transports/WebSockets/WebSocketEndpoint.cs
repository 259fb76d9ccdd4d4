using System.Buffers;
using System.Net.WebSockets;
using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Routing;
using OrleansPush.Gateway.Security;

namespace OrleansPush.Gateway.Transports.WebSockets;

/// <summary><c>GET /ws</c>: the raw JSON protocol. One receive loop per connection handles requests in order; its
/// writer loop sends replies and messages from one bounded queue.</summary>
internal sealed class WebSocketEndpoint(ConnectionCommands commands, Identity identity, IOptions<GatewayOptions> options, ILogger<WebSocketEndpoint> logger,
    ConnectionSecurity security, IOptions<TopicOptions> topics)
{
    public const string Path = "/ws";
    private readonly GatewayOptions _options = options.Value;
    private readonly TopicOptions _topics = topics.Value;

    public async Task HandleAsync(HttpContext context)
    {
        if (!context.WebSockets.IsWebSocketRequest)
        {
            await Problems.WriteAsync(context, StatusCodes.Status400BadRequest, WireCodes.BadRequest, "This endpoint speaks WebSocket only.");
            return;
        }

        var requested = context.WebSockets.WebSocketRequestedProtocols;
        if (requested.Count > 0 && !requested.Contains(WsFrames.SubProtocol))
        {
            await Problems.WriteAsync(context, StatusCodes.Status400BadRequest, WireCodes.BadRequest, $"The only subprotocol is {WsFrames.SubProtocol}.");
            return;
        }

        if (!identity.TryGetUser(context, out var userId, out var problem))
        {
            await Problems.WriteAsync(context, StatusCodes.Status400BadRequest, WireCodes.BadRequest, problem);
            return;
        }

        using var socket = await context.WebSockets.AcceptWebSocketAsync(new WebSocketAcceptContext
        {
            SubProtocol = requested.Count > 0 ? WsFrames.SubProtocol : null,
            // One gateway-wide sweep pings the sockets it was attached to (WebSocketKeepAlive); others ping themselves.
            KeepAliveInterval = WebSocketKeepAlive.IsAttached(context) ? TimeSpan.Zero : _options.KeepAliveInterval,
        });
        var connection = new WebSocketConnection(socket, userId, context.Connection.RemoteIpAddress?.ToString(), _options.Outbound);
        connection.Access = identity.AccessOf(context);
        var writer = connection.RunWriterAsync(context.RequestAborted);
        try
        {
            await commands.OnConnectedAsync(connection, holdForResume: true);
            await ReceiveAsync(socket, connection, context.RequestAborted);
        }
        catch (Exception ex) when (ex is WebSocketException or OperationCanceledException or IOException)
        {
        }
        finally
        {
            commands.OnDisconnected(connection);
            connection.Complete();
            await writer;
            if (connection.CloseReason is { } reason)
            {
                GatewayLog.ConnectionClosed(logger, connection.Id, connection.Transport, connection.RemoteAddress, reason);
            }
        }
    }

    private async Task ReceiveAsync(WebSocket socket, WebSocketConnection connection, CancellationToken cancellationToken)
    {
        var max = _options.MaxMessageBytes;
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Min(max + 1, 4096));
        try
        {
            while (connection.CloseReason is null)
            {
                var length = 0;
                ValueWebSocketReceiveResult result;
                while (true)
                {
                    if (length == buffer.Length)
                    {
                        var bigger = ArrayPool<byte>.Shared.Rent(Math.Min(buffer.Length * 2, max + 1));
                        buffer.AsSpan(0, length).CopyTo(bigger);
                        ArrayPool<byte>.Shared.Return(buffer);
                        buffer = bigger;
                    }

                    result = await socket.ReceiveAsync(buffer.AsMemory(length), cancellationToken);
                    length += result.Count;
                    if (result.EndOfMessage || result.MessageType == WebSocketMessageType.Close || length > max)
                    {
                        break;
                    }
                }

                if (result.MessageType == WebSocketMessageType.Close)
                {
                    await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, cancellationToken);
                    return;
                }

                if (length > max)
                {
                    connection.Close(WireCodes.TooLarge);
                    return;
                }

                // Every frame counts against the connection's rate, even one that turns out malformed.
                if (!security.TryAcceptMessage(connection))
                {
                    var limitedId = WsRequestParser.TryParse(buffer.AsMemory(0, length), out var limited, out var partialId, out _) ? limited.Id : partialId;
                    connection.Reply(WsFrames.Error(limitedId, WireCodes.RateLimited, "Too many frames per second; slow down and retry."));
                    continue;
                }

                if (result.MessageType == WebSocketMessageType.Binary)
                {
                    connection.Reply(WsFrames.Error(null, WireCodes.BadRequest, "Frames are JSON text."));
                    continue;
                }

                await HandleFrameAsync(connection, buffer.AsMemory(0, length));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async Task HandleFrameAsync(WebSocketConnection connection, ReadOnlyMemory<byte> frame)
    {
        if (!WsRequestParser.TryParse(frame, out var request, out var id, out var error))
        {
            connection.Reply(WsFrames.Error(id, WireCodes.BadRequest, error));
            return;
        }

        try
        {
            switch (request.Op)
            {
                case "sub":
                    // Deltas where the namespace allows them; elsewhere the answer has no "delta" and messages carry data.
                    var delta = request.Delta is not null && TopicName.IsValid(request.Topic) && _topics.For(request.Topic!).Delta ? request.Delta : null;
                    connection.UseDelta(request.Topic ?? string.Empty, delta is not null);
                    SubscribeResult result;
                    try
                    {
                        result = await commands.SubscribeAsync(connection, request.Topic, request.Since, request.Last, request.Presence);
                    }
                    catch
                    {
                        connection.UseDelta(request.Topic ?? string.Empty, false);
                        throw;
                    }

                    connection.Reply(WsFrames.Ok(request.Id, result, delta: delta));
                    break;
                case "unsub":
                    commands.Unsubscribe(connection, request.Topic);
                    connection.UseDelta(request.Topic ?? string.Empty, false);
                    connection.Reply(WsFrames.Ok(request.Id));
                    break;
                case "pub":
                    if (request.Data.IsEmpty)
                    {
                        connection.Reply(WsFrames.Error(request.Id, WireCodes.BadRequest, "\"data\" is missing."));
                        break;
                    }

                    var position = await commands.PublishAsync(connection, request.Topic, request.Data);
                    connection.Reply(WsFrames.Ok(request.Id, published: position));
                    break;
                case "refresh":
                    var revoked = await commands.RefreshAsync(connection, request.Token);
                    connection.Reply(WsFrames.Ok(request.Id, unsubscribed: revoked));
                    break;
                case "ping":
                    connection.Reply(WsFrames.Ok(request.Id));
                    break;
                default:
                    connection.Reply(WsFrames.Error(request.Id, WireCodes.BadRequest, "Unknown \"op\"; expected sub, unsub, pub, refresh or ping."));
                    break;
            }
        }
        catch (PushRejectedException rejected)
        {
            connection.Reply(WsFrames.Error(request.Id, rejected.Code, rejected.Message));
        }
        catch (OperationCanceledException)
        {
            connection.Reply(WsFrames.Error(request.Id, WireCodes.Unavailable, "The request was cancelled; try again."));
        }
        catch (Exception ex)
        {
            GatewayLog.RequestFailed(logger, connection.Id, ex);
            connection.Reply(WsFrames.Error(request.Id, WireCodes.Unavailable, "The request failed; try again."));
        }
    }
}
