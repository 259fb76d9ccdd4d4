using System.Collections.Concurrent;
using Microsoft.AspNetCore.SignalR;
using Microsoft.AspNetCore.SignalR.Protocol;
using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Hosting;

namespace OrleansPush.Gateway.Transports.SignalR;

/// <summary>A SignalR connection, on any SignalR transport and hub protocol. The <c>msg</c> invocation is serialised
/// once per message per hub protocol (<see cref="SerializedHubMessage"/> caches each protocol's bytes).</summary>
public sealed class SignalRConnection(HubConnectionContext context, string? userId, OutboundLimits limits)
    : QueuedConnection<SerializedHubMessage>("signalr", userId, context.GetHttpContext()?.Connection.RemoteIpAddress?.ToString(), limits)
{
    public static readonly WireForm<SerializedHubMessage> Message = new MessageForm();

    /// <summary>The client's <c>reset</c> handler gets <c>{topic, code}</c>, behind every message already queued.</summary>
    public override void SubscriptionEnded(string topic, string code) =>
        Enqueue(new SerializedHubMessage(new InvocationMessage(PushHub.ResetMethod, [new Dictionary<string, object?> { ["topic"] = topic, ["code"] = code }])),
            topic.Length + code.Length + 64);

    protected override bool Conflates => true;

    protected override SerializedHubMessage Encode(OutboundMessage message, out int size)
    {
        size = message.Message.Data.Length + message.Message.Topic.Length + 64;
        return message.Encoded(Message);
    }

    protected override ValueTask WriteAsync(SerializedHubMessage frame, bool moreQueued, CancellationToken cancellationToken) =>
        context.WriteAsync(frame, cancellationToken);

    protected override async Task CloseTransportAsync(string reason, CancellationToken cancellationToken)
    {
        var bye = new InvocationMessage(PushHub.ByeMethod, [new Dictionary<string, object?> { ["code"] = reason, ["reconnect"] = true }]);
        await context.WriteAsync(bye, cancellationToken);
        context.Abort();
    }

    protected override void Abort() => context.Abort();

    /// <summary><c>{topic, epoch, seq, data}</c>; a binary payload goes as <c>data_b64</c> in place of <c>data</c>: the
    /// JSON hub protocol writes the bytes as a base64 string, MessagePack as a <c>bin</c> value.</summary>
    private sealed class MessageForm : WireForm<SerializedHubMessage>
    {
        public override SerializedHubMessage Encode(TopicMessage m) =>
            new(new InvocationMessage(PushHub.MessageMethod, [new Dictionary<string, object?>
            {
                ["topic"] = m.Topic,
                ["epoch"] = m.Epoch,
                ["seq"] = m.Seq,
                [m.Format == PayloadFormat.Binary ? BinaryData : JsonData] = m.Format == PayloadFormat.Binary ? m.Data : HubData.FromJson(m.Data),
            }]));

        private static readonly string JsonData = System.Text.Encoding.UTF8.GetString(MessageJson.JsonData);
        private static readonly string BinaryData = System.Text.Encoding.UTF8.GetString(MessageJson.BinaryData);
    }
}

/// <summary>The SignalR connections of this gateway, by connection id.</summary>
public sealed class SignalRConnections(Identity identity, IOptions<GatewayOptions> options)
{
    private readonly ConcurrentDictionary<string, SignalRConnection> _byId = new(StringComparer.Ordinal);

    public int Count => _byId.Count;

    public SignalRConnection? Find(string connectionId) => _byId.GetValueOrDefault(connectionId);

    internal SignalRConnection Add(HubConnectionContext context)
    {
        string? user = null;
        if (context.GetHttpContext() is { } http && identity.TryGetUser(http, out var named, out _))
        {
            user = named;
        }

        var connection = new SignalRConnection(context, user, options.Value.Outbound);
        if (context.GetHttpContext() is { } request)
        {
            connection.Access = identity.AccessOf(request);
        }

        _byId[context.ConnectionId] = connection;
        _ = connection.RunWriterAsync(context.ConnectionAborted);
        return connection;
    }

    internal void Remove(HubConnectionContext context)
    {
        if (_byId.TryRemove(context.ConnectionId, out var connection))
        {
            connection.Complete();
        }
    }
}

/// <summary>SignalR's default lifetime manager, plus our connection registry: the hook where a
/// <see cref="HubConnectionContext"/> (which can write pre-serialised messages) is available.</summary>
internal sealed class PushHubLifetimeManager(ILogger<DefaultHubLifetimeManager<PushHub>> logger, SignalRConnections connections)
    : DefaultHubLifetimeManager<PushHub>(logger)
{
    public override async Task OnConnectedAsync(HubConnectionContext connection)
    {
        await base.OnConnectedAsync(connection);
        connections.Add(connection);
    }

    public override async Task OnDisconnectedAsync(HubConnectionContext connection)
    {
        connections.Remove(connection);
        await base.OnDisconnectedAsync(connection);
    }
}
