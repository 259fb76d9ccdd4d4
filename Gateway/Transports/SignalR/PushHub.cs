using System.Text.Json;
using MessagePack;
using Microsoft.AspNetCore.SignalR;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Transports.SignalR;

/// <summary>
/// <c>/hubs/push</c>: <c>Subscribe(topic, since)</c>, <c>Unsubscribe(topic)</c>, <c>Publish(topic, data)</c>; the
/// server calls the client's <c>msg</c> handler with <c>{topic, epoch, seq, data}</c>. Errors arrive as hub errors
/// whose message starts with the protocol's code (<c>forbidden: ...</c>).
/// </summary>
public sealed class PushHub(ConnectionCommands commands, SignalRConnections connections) : Hub
{
    public const string Path = "/hubs/push";
    public const string MessageMethod = "msg";
    public const string ByeMethod = "bye";
    public const string ResetMethod = "reset";

    public override async Task OnConnectedAsync()
    {
        await Guard(() => commands.OnConnectedAsync(Connection, holdForResume: true));
    }

    public override Task OnDisconnectedAsync(Exception? exception)
    {
        if (connections.Find(Context.ConnectionId) is { } connection)
        {
            commands.OnDisconnected(connection);
        }

        return Task.CompletedTask;
    }

    /// <summary>Swaps the connection's token for a fresh one (same <c>sub</c>) before the old one expires, as the raw
    /// protocol's <c>refresh</c> does; otherwise the connection is closed with <c>unauthorized</c> at expiry and the
    /// client reconnects with a new token (its <c>accessTokenFactory</c> is asked again).</summary>
    /// <summary>Takes a fresh token; returns the subscriptions it no longer grants, which are ended.</summary>
    public Task<string[]> Refresh(string token) => Guard(() => commands.RefreshAsync(Connection, token));

    /// <summary>Subscribes; with <paramref name="since"/>, first replays what came after it. The answer comes after the
    /// replayed messages, as the raw protocol's <c>ok</c> does: SignalR writes a result outside our queue, so it waits
    /// until everything queued before it has been written.</summary>
    public Task<SubscribeReply> Subscribe(string topic, SinceArg? since) => Guard(async () =>
    {
        var connection = Connection;
        var result = await commands.SubscribeAsync(connection, topic, since?.ToSince(), 0);
        await connection.WrittenAsync();
        return SubscribeReply.From(result);
    });

    public Task Unsubscribe(string topic) => Guard(() =>
    {
        commands.Unsubscribe(Connection, topic);
        return Task.CompletedTask;
    });

    /// <summary>Publishes, where the topic's namespace lets clients publish. Bytes (a MessagePack <c>bin</c> value) are
    /// published as binary; any other value as JSON.</summary>
    public Task<PublishReply> Publish(string topic, object? data) => Guard(async () =>
    {
        var position = data is byte[] bytes
            ? await commands.PublishAsync(Connection, topic, bytes, PayloadFormat.Binary)
            : await commands.PublishAsync(Connection, topic, HubData.ToJson(data));
        return new PublishReply { Topic = topic, Epoch = position.Epoch, Seq = position.Seq };
    });

    private SignalRConnection Connection =>
        connections.Find(Context.ConnectionId) ?? throw new HubException("unavailable: the connection is closing.");

    private static async Task Guard(Func<Task> action)
    {
        try
        {
            await action();
        }
        catch (PushRejectedException rejected)
        {
            throw new HubException($"{rejected.Code}: {rejected.Message}");
        }
    }

    private static async Task<T> Guard<T>(Func<Task<T>> action)
    {
        try
        {
            return await action();
        }
        catch (PushRejectedException rejected)
        {
            throw new HubException($"{rejected.Code}: {rejected.Message}");
        }
    }
}

/// <summary>The <c>since</c> argument of <c>Subscribe</c>.</summary>
[MessagePackObject]
public sealed class SinceArg
{
    [Key("epoch")]
    public string Epoch { get; set; } = string.Empty;

    [Key("seq")]
    public long Seq { get; set; }

    internal Since ToSince() => new(Epoch, Seq);
}

/// <summary>The result of <c>Subscribe</c>: the same as the raw protocol's <c>ok</c>.</summary>
[MessagePackObject]
public sealed class SubscribeReply
{
    [Key("epoch")]
    public string Epoch { get; set; } = string.Empty;

    [Key("seq")]
    public long Seq { get; set; }

    [Key("recovered")]
    public bool? Recovered { get; set; }

    internal static SubscribeReply From(SubscribeResult r) => new() { Epoch = r.Epoch, Seq = r.Seq, Recovered = r.Recovered };
}

[MessagePackObject]
public sealed class PublishReply
{
    [Key("topic")]
    public string Topic { get; set; } = string.Empty;

    [Key("epoch")]
    public string Epoch { get; set; } = string.Empty;

    [Key("seq")]
    public long Seq { get; set; }
}

/// <summary>Converts message data between JSON bytes and the plain values (maps, arrays, strings, numbers) that both
/// SignalR hub protocols can carry.</summary>
internal static class HubData
{
    public static object? FromJson(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json);
        reader.Read();
        return Read(ref reader);
    }

    public static byte[] ToJson(object? value) => value switch
    {
        JsonElement element => JsonSerializer.SerializeToUtf8Bytes(element),
        _ => JsonSerializer.SerializeToUtf8Bytes(Normalize(value)),
    };

    private static object? Read(ref Utf8JsonReader reader)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.StartObject:
                var map = new Dictionary<string, object?>(StringComparer.Ordinal);
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    var name = reader.GetString()!;
                    reader.Read();
                    map[name] = Read(ref reader);
                }

                return map;
            case JsonTokenType.StartArray:
                var list = new List<object?>();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    list.Add(Read(ref reader));
                }

                return list;
            case JsonTokenType.String:
                return reader.GetString();
            case JsonTokenType.Number:
                return reader.TryGetInt64(out var l) ? l : reader.GetDouble();
            case JsonTokenType.True:
                return true;
            case JsonTokenType.False:
                return false;
            default:
                return null;
        }
    }

    /// <summary>MessagePack gives maps with object keys; JSON wants string keys.</summary>
    private static object? Normalize(object? value) => value switch
    {
        System.Collections.IDictionary map => map.Keys.Cast<object>().ToDictionary(k => Convert.ToString(k, System.Globalization.CultureInfo.InvariantCulture) ?? string.Empty, k => Normalize(map[k])),
        string s => s,
        System.Collections.IEnumerable items => items.Cast<object?>().Select(Normalize).ToList(),
        _ => value,
    };
}
