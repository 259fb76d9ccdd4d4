namespace OrleansPush.Grains.History;

/// <summary>
/// A topic's recent messages in a ring: consecutive seqs, bounded by count and age. Reads are by seq arithmetic, so
/// neither a publish nor a read costs more as the history grows. The ring starts small and doubles up to its capacity:
/// most topics hold a message or two, and a ring of the full size cost each of them 800 bytes (issue 16).
/// </summary>
internal sealed class RecentHistory(int capacity, TimeSpan ttl)
{
    private const int FirstSize = 2;
    private TopicMessage[] _ring = [];
    private int _start;
    private int _count;

    public int Count => _count;

    /// <summary>The oldest seq kept, or 0 when empty.</summary>
    public long FirstSeq => _count == 0 ? 0 : _ring[_start].Seq;

    public void Append(TopicMessage message)
    {
        if (capacity <= 0)
        {
            return;
        }

        if (_count == _ring.Length && _ring.Length < capacity)
        {
            Grow();
        }

        if (_count == _ring.Length)
        {
            _ring[_start] = null!;
            _start = (_start + 1) % _ring.Length;
            _count--;
        }

        _ring[(_start + _count) % _ring.Length] = message;
        _count++;
    }

    private void Grow()
    {
        var grown = new TopicMessage[Math.Min(capacity, Math.Max(FirstSize, _ring.Length * 2))];
        for (var i = 0; i < _count; i++)
        {
            grown[i] = _ring[(_start + i) % _ring.Length];
        }

        _ring = grown;
        _start = 0;
    }

    public void Trim(long nowUnixMs)
    {
        var oldestAllowed = nowUnixMs - (long)ttl.TotalMilliseconds;
        while (_count > 0 && _ring[_start].PublishedAtUnixMs < oldestAllowed)
        {
            _ring[_start] = null!;
            _start = (_start + 1) % _ring.Length;
            _count--;
        }
    }

    /// <summary>Messages with seq greater than <paramref name="afterSeq"/>, oldest first, at most <paramref name="max"/>.</summary>
    public TopicMessage[] After(long afterSeq, int max)
    {
        if (_count == 0 || max <= 0)
        {
            return [];
        }

        var skip = (int)Math.Clamp(afterSeq - FirstSeq + 1, 0, _count);
        var take = Math.Min(max, _count - skip);
        var result = new TopicMessage[take];
        for (var i = 0; i < take; i++)
        {
            result[i] = _ring[(_start + skip + i) % _ring.Length];
        }

        return result;
    }

    public TopicMessage[] Last(int count) => After(_count == 0 ? 0 : FirstSeq - 1 + Math.Max(0, _count - count), count);
}
