using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using OrleansPush.Grains.History;
using StackExchange.Redis;

namespace OrleansPush.Grains.Tests;

/// <summary>
/// Encryption at rest: every store passes the conformance suite through <see cref="EncryptingHistoryStore"/>, holds
/// only ciphertext tagged with its key id, and keys rotate without rewriting history.
/// </summary>
public abstract class EncryptedHistoryStoreTests : HistoryStoreConformanceTests
{
    private static readonly HistoryBounds Ten = new(10, TimeSpan.FromHours(1));

    /// <summary>The store underneath, which sees what is written to disk.</summary>
    protected abstract IHistoryStore Inner { get; }

    protected override IHistoryStore Store => new EncryptingHistoryStore(Inner, Keys.Options("k1", "k1"));

    private static TopicMessage Message(string topic, string epoch, long seq, string json) =>
        new(topic, epoch, seq, Encoding.UTF8.GetBytes(json), DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());

    [Fact]
    public async Task TheUnderlyingStoreHoldsOnlyCiphertextTaggedWithTheKeyId()
    {
        var topic = "enc-" + Guid.NewGuid().ToString("N");
        await Store.AppendAsync(topic, "e", [Message(topic, "e", 1, "{\"card\":\"4111-1111\"}"), Message(topic, "e", 2, "{\"card\":\"5500-0000\"}")], Ten);

        var raw = (await Inner.LoadAsync(topic, Ten))!;
        Assert.Equal(2, raw.Head);
        Assert.All(raw.Messages, m =>
        {
            Assert.True(EncryptingHistoryStore.IsSealed(m.Data));
            Assert.Equal("k1", EncryptingHistoryStore.KeyIdOf(m.Data));
            Assert.DoesNotContain("card", Encoding.UTF8.GetString(m.Data), StringComparison.Ordinal);
        });

        var opened = (await Store.LoadAsync(topic, Ten))!;
        Assert.Equal(["{\"card\":\"4111-1111\"}", "{\"card\":\"5500-0000\"}"], opened.Messages.Select(m => Encoding.UTF8.GetString(m.Data)));
    }

    /// <summary>A message's MQTT 5 properties (user properties, correlation data, a response topic) are the
    /// publisher's data as much as its payload: sealed too, and bound to the message, so they cannot be swapped with
    /// its payload.</summary>
    [Fact]
    public async Task AMessagesPropertiesAreSealedLikeItsPayload()
    {
        var topic = "encp-" + Guid.NewGuid().ToString("N");
        byte[] properties = [0x26, 0, 4, (byte)'c', (byte)'a', (byte)'r', (byte)'d', 0, 4, (byte)'4', (byte)'1', (byte)'1', (byte)'1'];
        var message = Message(topic, "e", 1, "{\"a\":1}") with { Properties = properties };
        await Store.AppendAsync(topic, "e", [message], Ten);

        var raw = (await Inner.LoadAsync(topic, Ten))!.Messages[0];
        Assert.NotNull(raw.Properties);
        Assert.True(EncryptingHistoryStore.IsSealed(raw.Properties));
        Assert.DoesNotContain("card", Encoding.UTF8.GetString(raw.Properties), StringComparison.Ordinal);
        Assert.Equal(properties, (await Store.LoadAsync(topic, Ten))!.Messages[0].Properties);

        // The sealed properties stored as a payload (and the payload as properties) do not open.
        var swapped = new TopicMessage(topic, "e", 2, raw.Properties, raw.PublishedAtUnixMs, raw.Format, raw.Data);
        await Inner.AppendAsync(topic, "e", [swapped], Ten);
        await Assert.ThrowsAnyAsync<CryptographicException>(() => Store.LoadAsync(topic, Ten));
    }

    [Fact]
    public async Task KeysRotateWithoutRewritingHistoryAndARemovedKeyFailsLoudly()
    {
        var topic = "rot-" + Guid.NewGuid().ToString("N");
        await new EncryptingHistoryStore(Inner, Keys.Options("k1", "k1")).AppendAsync(topic, "e", [Message(topic, "e", 1, "1"), Message(topic, "e", 2, "2")], Ten);
        var rotated = new EncryptingHistoryStore(Inner, Keys.Options("k2", "k1", "k2"));
        await rotated.AppendAsync(topic, "e", [Message(topic, "e", 3, "3")], Ten);

        Assert.Equal(["1", "2", "3"], (await rotated.LoadAsync(topic, Ten))!.Messages.Select(m => Encoding.UTF8.GetString(m.Data)));
        Assert.Equal(["k1", "k1", "k2"], (await Inner.LoadAsync(topic, Ten))!.Messages.Select(m => EncryptingHistoryStore.KeyIdOf(m.Data)));

        var withoutOldKey = new EncryptingHistoryStore(Inner, Keys.Options("k2", "k2"));
        var error = await Assert.ThrowsAsync<CryptographicException>(() => withoutOldKey.LoadAsync(topic, Ten));
        Assert.Contains("'k1'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task PlaintextWrittenBeforeEncryptionWasTurnedOnStillLoads()
    {
        var topic = "plain-" + Guid.NewGuid().ToString("N");
        await Inner.AppendAsync(topic, "e", [Message(topic, "e", 1, "{\"old\":true}")], Ten);
        await Store.AppendAsync(topic, "e", [Message(topic, "e", 2, "{\"new\":true}")], Ten);
        Assert.Equal(["{\"old\":true}", "{\"new\":true}"], (await Store.LoadAsync(topic, Ten))!.Messages.Select(m => Encoding.UTF8.GetString(m.Data)));
    }

    [Fact]
    public async Task ACiphertextMovedToAnotherPositionDoesNotOpen()
    {
        var topic = "move-" + Guid.NewGuid().ToString("N");
        await Store.AppendAsync(topic, "e", [Message(topic, "e", 1, "{\"a\":1}")], Ten);
        var sealedData = (await Inner.LoadAsync(topic, Ten))!.Messages[0].Data;
        await Inner.AppendAsync(topic, "e", [new TopicMessage(topic, "e", 2, sealedData, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds())], Ten);
        await Assert.ThrowsAnyAsync<CryptographicException>(() => Store.LoadAsync(topic, Ten));
    }
}

public sealed class EncryptedMemoryHistoryStoreTests : EncryptedHistoryStoreTests
{
    protected override IHistoryStore Inner { get; } = new MemoryHistoryStore(TimeProvider.System);
}

public sealed class EncryptedRedisHistoryStoreTests : EncryptedHistoryStoreTests, IDisposable
{
    private readonly ConnectionMultiplexer _redis = ConnectionMultiplexer.Connect(TestServers.Redis);

    protected override IHistoryStore Inner => new RedisHistoryStore(_redis, "testenc" + Environment.ProcessId);

    public void Dispose() => _redis.Dispose();
}

public sealed class EncryptedPostgresHistoryStoreTests : EncryptedHistoryStoreTests, IDisposable
{
    private readonly NpgsqlDataSource _postgres = NpgsqlDataSource.Create(TestServers.Postgres);

    protected override IHistoryStore Inner => new PostgresHistoryStore(_postgres, "testenc");

    public void Dispose() => _postgres.Dispose();
}

public sealed class EncryptionConfigurationTests
{
    [Fact]
    public void EncryptionIsOffByDefaultAndTheStoreIsLeftAlone()
    {
        var services = new ServiceCollection();
        services.AddSingleton<IHistoryStore>(new MemoryHistoryStore(TimeProvider.System));
        services.AddHistoryEncryption(new ConfigurationBuilder().Build());
        using var provider = services.BuildServiceProvider();
        Assert.IsType<MemoryHistoryStore>(provider.GetRequiredService<IHistoryStore>());
    }

    [Fact]
    public void AnActiveKeyWrapsTheRegisteredStore()
    {
        var services = new ServiceCollection();
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<IHistoryStore, MemoryHistoryStore>();
        services.AddHistoryEncryption(Configuration(("ActiveKey", "a"), ("Keys:a", Keys.New())));
        using var provider = services.BuildServiceProvider();
        Assert.IsType<EncryptingHistoryStore>(provider.GetRequiredService<IHistoryStore>());
    }

    [Theory]
    [InlineData("b", "Encryption:ActiveKey")]
    [InlineData("short", "Encryption:Keys:a")]
    public void ABadSettingStopsTheSiloNamingTheKey(string mistake, string named)
    {
        var settings = mistake == "short"
            ? Configuration(("ActiveKey", "a"), ("Keys:a", Convert.ToBase64String(new byte[16])))
            : Configuration(("ActiveKey", "b"), ("Keys:a", Keys.New()));
        var services = new ServiceCollection();
        services.AddSingleton<IHistoryStore>(new MemoryHistoryStore(TimeProvider.System));
        var error = Assert.Throws<InvalidOperationException>(() => services.AddHistoryEncryption(settings));
        Assert.Contains(named, error.Message, StringComparison.Ordinal);
    }

    private static IConfiguration Configuration(params (string Key, string Value)[] settings) =>
        new ConfigurationBuilder().AddInMemoryCollection(settings.Select(s =>
            new KeyValuePair<string, string?>(HistoryEncryptionOptions.Section + ":" + s.Key, s.Value))).Build();
}

internal static class Keys
{
    private static readonly Dictionary<string, string> Known = new()
    {
        ["k1"] = Convert.ToBase64String([.. Enumerable.Range(0, 32).Select(i => (byte)i)]),
        ["k2"] = Convert.ToBase64String([.. Enumerable.Range(0, 32).Select(i => (byte)(255 - i))]),
    };

    public static string New() => Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    public static HistoryEncryptionOptions Options(string active, params string[] ids) => new()
    {
        ActiveKey = active,
        Keys = ids.ToDictionary(id => id, id => Known[id], StringComparer.Ordinal),
    };
}
