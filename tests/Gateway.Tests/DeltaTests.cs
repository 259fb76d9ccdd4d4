using System.Text;
using OrleansPush.Client;

namespace OrleansPush.Gateway.Tests;

/// <summary>Delta compression on the raw WebSocket protocol (DESIGN.md "State topics"): a subscriber that asks for
/// <c>"delta":"fossil"</c> gets the first message whole (<c>text</c>) and later ones as Fossil deltas against the one
/// before, which rebuild the publisher's bytes exactly; subscribers that did not ask get <c>data</c> as always.</summary>
[Collection(StateTopicsCollection.Name)]
public sealed class DeltaTests(StateTopicsFixture fixture)
{
    private const int Messages = 300;

    private TestGateway Gateway => fixture.Gateway;

    [Fact]
    public async Task DeltaSubscribersRebuildEveryMessageByteForByteFromFarFewerBytes()
    {
        var topic = GatewayFixture.NewTopic("delta:game");
        await using var first = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await using var second = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await using var plain = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await using var late = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        foreach (var client in new[] { first, second })
        {
            Assert.Equal("fossil", (await client.RequestAsync("sub", new { topic, delta = "fossil" })).Json.GetProperty("delta").GetString());
        }

        Assert.False((await plain.SubscribeAsync(topic)).Json.TryGetProperty("delta", out _));

        var feed = new RandomEdits(seed: 13);
        var published = new List<byte[]>();
        long lateFrom = 0;
        for (var i = 0; i < Messages; i++)
        {
            if (i == Messages / 3)
            {
                lateFrom = (await late.RequestAsync("sub", new { topic, delta = "fossil" })).Seq;
            }

            var json = feed.Next();
            published.Add(json);
            await Gateway.PublishAsync(topic, Encoding.UTF8.GetString(json));
        }

        var firstFrames = await first.MessagesAsync(Messages);
        var secondFrames = await second.MessagesAsync(Messages);
        var plainFrames = await plain.MessagesAsync(Messages);
        var lateFrames = await late.MessagesAsync(Messages - (int)lateFrom);

        Assert.Equal(published.Select(Encoding.UTF8.GetString), plainFrames.Select(f => f.RawData));
        Assert.Equal(published, Rebuild(firstFrames));
        Assert.Equal(published[(int)lateFrom..], Rebuild(lateFrames));

        // Whole first (also for the late joiner), deltas after; and the same frames for every delta subscriber.
        Assert.True(firstFrames[0].Json.TryGetProperty("text", out _));
        Assert.True(lateFrames[0].Json.TryGetProperty("text", out _));
        Assert.Equal(firstFrames.Select(f => f.Raw), secondFrames.Select(f => f.Raw));
        var deltas = firstFrames.Count(f => f.Json.TryGetProperty("delta", out _));
        Assert.True(deltas > Messages * 9 / 10, $"only {deltas} of {Messages} messages came as deltas");
        long deltaBytes = firstFrames.Sum(f => Encoding.UTF8.GetByteCount(f.Raw)), plainBytes = plainFrames.Sum(f => Encoding.UTF8.GetByteCount(f.Raw));
        Assert.True(deltaBytes * 4 < plainBytes, $"{deltaBytes} bytes with deltas against {plainBytes} without");
    }

    [Fact]
    public async Task InANamespaceWithoutDeltaTheAnswerSaysNoDeltaAndMessagesCarryData()
    {
        var topic = GatewayFixture.NewTopic("plain:nodelta");
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var ok = await client.RequestAsync("sub", new { topic, delta = "fossil" });
        Assert.Equal("ok", ok.Op);
        Assert.False(ok.Json.TryGetProperty("delta", out _));
        await Gateway.PublishAsync(topic, "{\"a\":1}");
        await Gateway.PublishAsync(topic, "{\"a\":2}");
        Assert.Equal(["{\"a\":1}", "{\"a\":2}"], (await client.MessagesAsync(2)).Select(f => f.RawData));
    }

    [Fact]
    public async Task AnUnknownDeltaCodecIsABadRequest()
    {
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var error = await client.RequestAsync("sub", new { topic = "delta:x", delta = "xdelta" });
        Assert.Equal(("error", "bad_request"), (error.Op, error.Code));
    }

    /// <summary>What a client holds after each frame: <c>text</c> as UTF-8, or <c>delta</c> applied to the bytes before.</summary>
    private static List<byte[]> Rebuild(List<Frame> frames)
    {
        var rebuilt = new List<byte[]>();
        foreach (var frame in frames)
        {
            if (frame.Json.TryGetProperty("text", out var text))
            {
                rebuilt.Add(Encoding.UTF8.GetBytes(text.GetString()!));
            }
            else
            {
                var delta = Encoding.Latin1.GetBytes(frame.Json.GetProperty("delta").GetString()!);
                rebuilt.Add(FossilDelta.Apply(rebuilt[^1], delta));
            }
        }

        return rebuilt;
    }
}
