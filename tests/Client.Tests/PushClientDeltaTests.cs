using System.Text;
using OrleansPush.Gateway.Tests;

namespace OrleansPush.Client.Tests;

/// <summary>The .NET client applies the gateway's Fossil deltas: its handler sees the publisher's JSON byte for byte.</summary>
public sealed class PushClientDeltaTests
{
    private const int Messages = 1_000;

    [Fact]
    public async Task ClientRebuildsAThousandRandomlyEditedMessagesByteForByteFromDeltas()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Topics:Namespaces:doc:Delta"] = "true",
        });
        var topic = "doc:" + Guid.NewGuid().ToString("N");
        var received = new List<PushMessage>();
        await using var client = new PushClient(new PushClientOptions { Url = new Uri($"ws://{gateway.BaseAddress.Authority}/ws") });
        var errors = new List<Exception>();
        client.Error += e => { lock (errors) { errors.Add(e); } };
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await client.StartAsync(cts.Token);
        await client.SubscribeAsync(topic, m =>
        {
            lock (received)
            {
                received.Add(m);
            }

            return ValueTask.CompletedTask;
        }, delta: true, cts.Token);

        var feed = new RandomEdits(seed: 1_000);
        var published = new List<byte[]>(Messages);
        for (var i = 0; i < Messages; i++)
        {
            published.Add(feed.Next());
            await gateway.PublishAsync(topic, Encoding.UTF8.GetString(published[^1]));
        }

        await PushClientTests.Until(() => PushClientTests.Count(received) >= Messages, "every message");
        lock (received)
        {
            Assert.Equal(Enumerable.Range(1, Messages).Select(i => (long)i), received.Select(m => m.Seq));
            Assert.Equal(published, received.Select(m => m.RawData.ToArray()));
        }

        lock (errors)
        {
            Assert.Empty(errors);
        }
    }
}
