using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using OrleansPush.Hosting;

namespace OrleansPush.Grains.History;

/// <summary>
/// Encryption at rest for any <see cref="IHistoryStore"/>: each message's payload, and its transport properties when it
/// has any (MQTT 5 user properties, correlation data, a response topic: the publisher's data too), are sealed with
/// AES-256-GCM before they are appended and opened after they are loaded, so the store (Redis, PostgreSQL, a dump of
/// either) only ever holds ciphertext. Epoch, seq, topic and timestamps stay in the clear: the stores need them to order and trim.
/// <para>Each sealed payload carries the id of the key that sealed it, so keys rotate without rewriting history: new
/// messages use <see cref="HistoryEncryptionOptions.ActiveKey"/>, older ones open with whichever configured key they
/// name; drop an old key once the history it sealed has aged out. The topic, epoch and seq are bound in as associated
/// data (with the payload's format), so a ciphertext moved to another position fails to open instead of being
/// delivered there. JSON payloads stored before encryption was turned on (which can never start with the format's zero
/// byte, as JSON cannot) are returned as they are; a binary payload stored in the clear could, so binary history
/// written before encryption was turned on is not supported. A payload naming a key that is not configured, or failing its tag, makes the load fail loudly rather than
/// deliver something wrong.</para>
/// </summary>
public sealed class EncryptingHistoryStore : IHistoryStore
{
    private const int NonceSize = 12;
    private const int TagSize = 16;
    private static readonly byte[] Magic = [0x00, (byte)'O', (byte)'P', (byte)'E', 0x01];
    private const byte PropertiesMark = (byte)'P';

    private readonly IHistoryStore _inner;
    private readonly Dictionary<string, byte[]> _keys;
    private readonly string _activeKey;
    private readonly byte[] _activeKeyId;

    public EncryptingHistoryStore(IHistoryStore inner, HistoryEncryptionOptions options)
    {
        options.Validate();
        _inner = inner;
        _keys = options.Keys.ToDictionary(k => k.Key, k => Convert.FromBase64String(k.Value), StringComparer.Ordinal);
        _activeKey = options.ActiveKey!;
        _activeKeyId = Encoding.UTF8.GetBytes(_activeKey);
    }

    public async Task<StoredHistory?> LoadAsync(string topic, HistoryBounds bounds, CancellationToken cancellationToken = default)
    {
        var stored = await _inner.LoadAsync(topic, bounds, cancellationToken);
        if (stored is null || (stored.Messages.Count == 0 && stored.Latest is null))
        {
            return stored;
        }

        var opened = new TopicMessage[stored.Messages.Count];
        for (var i = 0; i < opened.Length; i++)
        {
            var m = stored.Messages[i];
            opened[i] = Open(m);
        }

        return stored with { Messages = opened, Latest = stored.Latest is { } latest ? Open(latest) : null };
    }

    public Task AppendAsync(string topic, string epoch, IReadOnlyList<TopicMessage> messages, IReadOnlyList<IdempotencyKey> keys, HistoryBounds bounds,
        LatestChange latest, CancellationToken cancellationToken = default)
    {
        using var aes = new AesGcm(_keys[_activeKey], TagSize);
        var sealedMessages = new TopicMessage[messages.Count];
        for (var i = 0; i < sealedMessages.Length; i++)
        {
            var m = messages[i];
            sealedMessages[i] = m with
            {
                Data = Seal(aes, m.Data, AssociatedData(m, properties: false)),
                Properties = m.Properties is { } properties ? Seal(aes, properties, AssociatedData(m, properties: true)) : null,
            };
        }

        return _inner.AppendAsync(topic, epoch, sealedMessages, keys, bounds, latest, cancellationToken);
    }

    public Task ClearLatestAsync(string topic, string epoch, long head, CancellationToken cancellationToken = default) =>
        _inner.ClearLatestAsync(topic, epoch, head, cancellationToken);

    /// <summary>Idempotency keys are identifiers the publisher chose, not payloads: they are stored in the clear.</summary>
    public Task<TopicPosition?> FindKeyAsync(string topic, string key, CancellationToken cancellationToken = default) =>
        _inner.FindKeyAsync(topic, key, cancellationToken);

    /// <summary>True when <paramref name="data"/> is in the sealed format (for tests and tools).</summary>
    public static bool IsSealed(ReadOnlySpan<byte> data) => data.StartsWith(Magic);

    /// <summary>The id of the key that sealed <paramref name="data"/>, or null when it is not sealed.</summary>
    public static string? KeyIdOf(ReadOnlySpan<byte> data) =>
        IsSealed(data) && data.Length > Magic.Length && data.Length >= Magic.Length + 1 + data[Magic.Length]
            ? Encoding.UTF8.GetString(data.Slice(Magic.Length + 1, data[Magic.Length]))
            : null;

    private TopicMessage Open(TopicMessage m) => m with
    {
        Data = Open(m, m.Data, AssociatedData(m, properties: false)),
        Properties = m.Properties is { } properties ? Open(m, properties, AssociatedData(m, properties: true)) : null,
    };

    // Layout: magic(5) | key id length(1) | key id | nonce(12) | tag(16) | ciphertext.
    private byte[] Seal(AesGcm aes, byte[] plain, byte[] associatedData)
    {
        var header = Magic.Length + 1 + _activeKeyId.Length;
        var output = new byte[header + NonceSize + TagSize + plain.Length];
        Magic.CopyTo(output, 0);
        output[Magic.Length] = (byte)_activeKeyId.Length;
        _activeKeyId.CopyTo(output, Magic.Length + 1);
        var nonce = output.AsSpan(header, NonceSize);
        RandomNumberGenerator.Fill(nonce);
        aes.Encrypt(nonce, plain, output.AsSpan(header + NonceSize + TagSize), output.AsSpan(header + NonceSize, TagSize), associatedData);
        return output;
    }

    /// <summary>Opens <paramref name="stored"/> (<paramref name="m"/>'s payload or properties); what is not sealed was
    /// stored before encryption was turned on and is returned as it is (MQTT properties never start with a zero byte).</summary>
    private byte[] Open(TopicMessage m, byte[] stored, byte[] associatedData)
    {
        var data = stored.AsSpan();
        if (!IsSealed(data))
        {
            return stored;
        }

        var keyId = KeyIdOf(data) ?? throw new CryptographicException($"History of {m.Topic} seq {m.Seq}: the sealed payload is truncated.");
        if (!_keys.TryGetValue(keyId, out var key))
        {
            throw new CryptographicException(
                $"History of {m.Topic} seq {m.Seq} was sealed with key '{keyId}', which is not in {HistoryEncryptionOptions.Section}:Keys.");
        }

        var header = Magic.Length + 1 + data[Magic.Length];
        if (data.Length < header + NonceSize + TagSize)
        {
            throw new CryptographicException($"History of {m.Topic} seq {m.Seq}: the sealed payload is truncated.");
        }

        var plain = new byte[data.Length - header - NonceSize - TagSize];
        using var aes = new AesGcm(key, TagSize);
        aes.Decrypt(data.Slice(header, NonceSize), data[(header + NonceSize + TagSize)..], data.Slice(header + NonceSize, TagSize), plain, associatedData);
        return plain;
    }

    /// <summary>Topic, epoch and seq; for a binary payload one byte more, so that flipping a stored message's format
    /// makes it fail to open (a JSON message's associated data is what it was before formats existed); and for the
    /// properties a last byte of their own, so that payload and properties cannot be swapped.</summary>
    private static byte[] AssociatedData(TopicMessage m, bool properties)
    {
        var topic = Encoding.UTF8.GetBytes(m.Topic + "\n" + m.Epoch + "\n");
        var binary = m.Format == PayloadFormat.Binary;
        var ad = new byte[topic.Length + 8 + (binary ? 1 : 0) + (properties ? 1 : 0)];
        topic.CopyTo(ad, 0);
        BinaryPrimitives.WriteInt64BigEndian(ad.AsSpan(topic.Length), m.Seq);
        if (binary)
        {
            ad[topic.Length + 8] = (byte)PayloadFormat.Binary;
        }

        if (properties)
        {
            ad[^1] = PropertiesMark;
        }

        return ad;
    }
}

/// <summary>Encryption at rest of history payloads (<c>OrleansPush:Storage:Encryption</c>); off unless
/// <see cref="ActiveKey"/> is set. The same on every silo.</summary>
public sealed class HistoryEncryptionOptions
{
    public const string Section = StorageOptions.Section + ":Encryption";
    public const int KeyBytes = 32;

    /// <summary>Keys by id: base64 of 32 random bytes each (<c>openssl rand -base64 32</c>). Keep retired keys here
    /// until the history they sealed has expired.</summary>
    public Dictionary<string, string> Keys { get; set; } = new(StringComparer.Ordinal);

    /// <summary>The id of the key new messages are sealed with; unset means encryption is off.</summary>
    public string? ActiveKey { get; set; }

    public bool Enabled => !string.IsNullOrWhiteSpace(ActiveKey);

    /// <summary>Throws with a message naming the key when the settings are unusable.</summary>
    public void Validate()
    {
        if (!Enabled)
        {
            throw new InvalidOperationException($"{Section}:ActiveKey must name one of {Section}:Keys.");
        }

        foreach (var (id, value) in Keys)
        {
            if (id.Length is 0 or > 64 || id.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')))
            {
                throw new InvalidOperationException($"{Section}:Keys:{id}: a key id is 1-64 characters of A-Z a-z 0-9 - _ .");
            }

            var buffer = new byte[value.Length];
            if (!Convert.TryFromBase64String(value, buffer, out var written) || written != KeyBytes)
            {
                throw new InvalidOperationException($"{Section}:Keys:{id} must be base64 of exactly {KeyBytes} bytes (AES-256).");
            }
        }

        if (!Keys.ContainsKey(ActiveKey!))
        {
            throw new InvalidOperationException($"{Section}:ActiveKey is '{ActiveKey}', which is not in {Section}:Keys.");
        }
    }
}

public static class HistoryEncryption
{
    /// <summary>When <c>OrleansPush:Storage:Encryption:ActiveKey</c> is set, wraps the registered
    /// <see cref="IHistoryStore"/> in an <see cref="EncryptingHistoryStore"/> (validating the keys now, so a bad
    /// setting stops the silo at start). Call after the store is registered.</summary>
    public static IServiceCollection AddHistoryEncryption(this IServiceCollection services, IConfiguration configuration)
    {
        var options = configuration.GetSection(HistoryEncryptionOptions.Section).Get<HistoryEncryptionOptions>() ?? new HistoryEncryptionOptions();
        if (!options.Enabled)
        {
            return services;
        }

        options.Validate();
        var index = -1;
        for (var i = 0; i < services.Count; i++)
        {
            if (services[i].ServiceType == typeof(IHistoryStore) && !services[i].IsKeyedService)
            {
                index = i;
            }
        }

        if (index < 0)
        {
            throw new InvalidOperationException("History encryption is configured but no history store is registered.");
        }

        var inner = services[index];
        services[index] = ServiceDescriptor.Singleton<IHistoryStore>(sp => new EncryptingHistoryStore(Create(sp, inner), options));
        return services;
    }

    private static IHistoryStore Create(IServiceProvider services, ServiceDescriptor descriptor) =>
        descriptor.ImplementationInstance as IHistoryStore
        ?? (IHistoryStore?)descriptor.ImplementationFactory?.Invoke(services)
        ?? (IHistoryStore)ActivatorUtilities.CreateInstance(services, descriptor.ImplementationType!);
}
